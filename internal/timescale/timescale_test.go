package timescale

import (
	"testing"
	"time"
)

func TestBound(t *testing.T) {
	for _, c := range []struct {
		env  string
		want time.Duration
	}{
		{"", 5 * time.Second},
		{"x", 5 * time.Second},
		{"0.5", 5 * time.Second},
		{"1", 5 * time.Second},
		{"2.5", 12500 * time.Millisecond},
		{"12", time.Minute},
	} {
		t.Setenv(Env, c.env)
		if got := Bound(5 * time.Second); got != c.want {
			t.Errorf("%s=%q: Bound(5s) = %v, want %v", Env, c.env, got, c.want)
		}
	}
}
