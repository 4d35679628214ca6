package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
)

// TestDemo runs README's first command's work end to end and checks what a
// reader is told: the spread over all three backends with the pod's IP
// kept, masquerading under the Cluster policy and the client IP kept under
// the Local policy.
func TestDemo(t *testing.T) {
	testnet.RequireKernel(t, "nft")
	var out bytes.Buffer
	if err := Run(context.Background(), &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	text := out.String()
	for _, want := range []string{
		"pod1b  saw source 10.244.1.2",
		"pod2a  saw source 10.244.1.2",
		"pod2b  saw source 10.244.1.2",
		"pod2a  saw source 198.51.100.1 ",
		"pod1b  saw source 198.51.100.100          30",
		"chain lb-endpoints-tcp-3",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "failed") {
		t.Errorf("some demo requests failed:\n%s", text)
	}
}

func TestInputNamesBadDocuments(t *testing.T) {
	_, err := Input([]byte("kind: Service\nmetadata: {name: a}\nspec: {bogus: 1}\n"))
	if err == nil || !strings.Contains(err.Error(), "document 1 (Service)") || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("want an error naming the document and field, got %v", err)
	}
	_, err = Input([]byte("kind: Pod\n"))
	if err == nil || !strings.Contains(err.Error(), `kind "Pod"`) {
		t.Fatalf("want an error naming the kind, got %v", err)
	}
}
