package ipvs

import "testing"

func TestConnReuseBroken(t *testing.T) {
	for release, want := range map[string]bool{
		"4.19.0-27-amd64": true, "5.4.0-42-generic": true, "5.8.18": true,
		"5.9.0": false, "5.10.0-30-amd64": false, "6.1.0-57-amd64": false, "6.18.44-fc": false, "": false,
	} {
		if got := connReuseBroken(release); got != want {
			t.Errorf("connReuseBroken(%q) = %v, want %v", release, got, want)
		}
	}
}
