package walkthrough

import "testing"

func TestShellWords(t *testing.T) {
	got := shellWords([]string{"patch", "service", "web", "-p", `{"spec":{"ipFamilyPolicy":"PreferDualStack"}}`, "-o", "jsonpath={.spec}", "it's"})
	want := `patch service web -p '{"spec":{"ipFamilyPolicy":"PreferDualStack"}}' -o 'jsonpath={.spec}' 'it'\''s'`
	if got != want {
		t.Errorf("shellWords = %s\nwant          %s", got, want)
	}
}
