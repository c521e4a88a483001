package podium

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// vectorsDir holds the cases shared with the Rust member library (crates/member): a pod and
// the groups seen, and the role, term, group and leader a member reads from them. Cases on
// which the two libraries disagree (an empty spec.roleLabel, an empty status.leader) are left
// out; its README.md describes them.
const vectorsDir = "../../testdata/member"

// vector is one case; null in expected is the zero value here ("" or 0).
type vector struct {
	Description string                   `json:"description"`
	Pod         *corev1.Pod              `json:"pod"`
	Groups      []map[string]interface{} `json:"groups"`
	Expected    struct {
		Role   string  `json:"role"`
		Term   *int64  `json:"term"`
		Group  *string `json:"group"`
		Leader *string `json:"leader"`
	} `json:"expected"`
}

func TestSharedVectors(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(vectorsDir, "*.json"))
	if err != nil || len(files) < 12 {
		t.Fatalf("test vectors in %s: %d files, %v", vectorsDir, len(files), err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".json")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var v vector
			if err := json.Unmarshal(raw, &v); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			groups := map[string]groupView{}
			for _, g := range v.Groups {
				obj := &unstructured.Unstructured{Object: g}
				groups[obj.GetName()] = viewOf(obj)
			}
			got := observe(v.Pod, groups)
			deref := func(s *string) string {
				if s == nil {
					return ""
				}
				return *s
			}
			var term int64
			if v.Expected.Term != nil {
				term = *v.Expected.Term
			}
			if got.Role.String() != v.Expected.Role || got.Term != term ||
				got.Group != deref(v.Expected.Group) || got.Leader != deref(v.Expected.Leader) {
				t.Errorf("%s\nobserve = role %s, term %d, group %q, leader %q\nwant role %s, term %d, group %q, leader %q",
					v.Description, got.Role, got.Term, got.Group, got.Leader,
					v.Expected.Role, term, deref(v.Expected.Group), deref(v.Expected.Leader))
			}
		})
	}
}
