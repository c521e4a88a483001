package podium

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestRoleString(t *testing.T) {
	for role, want := range map[Role]string{RoleUnknown: "unknown", RoleFollower: "follower", RoleLeader: "leader", Role(7): "unknown"} {
		if got := role.String(); got != want {
			t.Errorf("Role(%d).String() = %q, want %q", int(role), got, want)
		}
	}
}

func testPod(labels, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "prod", Labels: labels, Annotations: annotations}}
}

func TestObserve(t *testing.T) {
	groups := map[string]groupView{
		"web":    {leader: "web-1"},
		"custom": {roleLabel: "example.com/role", leader: "web-0"},
		"mbb":    {leader: "web-2", makeBeforeBreak: true},
	}
	cases := []struct {
		name   string
		pod    *corev1.Pod
		groups map[string]groupView
		want   State
	}{
		{"no pod", nil, groups, State{Role: RoleFollower}},
		{"not marked", testPod(map[string]string{DefaultRoleLabel: "leader"}, map[string]string{TermAnnotation: "3"}), groups,
			State{Role: RoleFollower}},
		{"follower", testPod(map[string]string{DefaultRoleLabel: "follower"}, map[string]string{GroupAnnotation: "web"}), groups,
			State{Role: RoleFollower, Group: "web", Leader: "web-1"}},
		{"marked, not labelled yet", testPod(nil, map[string]string{GroupAnnotation: "web"}), groups,
			State{Role: RoleFollower, Group: "web", Leader: "web-1"}},
		{"leader", testPod(map[string]string{DefaultRoleLabel: "leader"}, map[string]string{GroupAnnotation: "web", TermAnnotation: "12"}), groups,
			State{Role: RoleLeader, Term: 12, Group: "web", Leader: "web-1"}},
		{"leader, group not seen: default key", testPod(map[string]string{DefaultRoleLabel: "leader"}, map[string]string{GroupAnnotation: "gone", TermAnnotation: "2"}), groups,
			State{Role: RoleLeader, Term: 2, Group: "gone"}},
		{"custom role label", testPod(map[string]string{"example.com/role": "leader"}, map[string]string{GroupAnnotation: "custom", TermAnnotation: "4"}), groups,
			State{Role: RoleLeader, Term: 4, Group: "custom", Leader: "web-0"}},
		{"default key ignored when the group has its own", testPod(map[string]string{DefaultRoleLabel: "leader", "example.com/role": "follower"}, map[string]string{GroupAnnotation: "custom", TermAnnotation: "4"}), groups,
			State{Role: RoleFollower, Group: "custom", Leader: "web-0"}},
		{"term absent", testPod(map[string]string{DefaultRoleLabel: "leader"}, map[string]string{GroupAnnotation: "web"}), groups,
			State{Role: RoleLeader, Group: "web", Leader: "web-1"}},
		{"term not a number", testPod(map[string]string{DefaultRoleLabel: "leader"}, map[string]string{GroupAnnotation: "web", TermAnnotation: "7x"}), groups,
			State{Role: RoleLeader, Group: "web", Leader: "web-1"}},
		{"term zero", testPod(map[string]string{DefaultRoleLabel: "leader"}, map[string]string{GroupAnnotation: "web", TermAnnotation: "0"}), groups,
			State{Role: RoleLeader, Group: "web", Leader: "web-1"}},
		{"term negative", testPod(map[string]string{DefaultRoleLabel: "leader"}, map[string]string{GroupAnnotation: "web", TermAnnotation: "-3"}), groups,
			State{Role: RoleLeader, Group: "web", Leader: "web-1"}},
		{"term of a follower ignored", testPod(map[string]string{DefaultRoleLabel: "follower"}, map[string]string{GroupAnnotation: "web", TermAnnotation: "9"}), groups,
			State{Role: RoleFollower, Group: "web", Leader: "web-1"}},
		{"make-before-break leader", testPod(map[string]string{DefaultRoleLabel: "leader"}, map[string]string{GroupAnnotation: "mbb", TermAnnotation: "5"}), groups,
			State{Role: RoleLeader, Term: 5, Group: "mbb", Leader: "web-2", MakeBeforeBreak: true}},
		{"make-before-break follower", testPod(map[string]string{DefaultRoleLabel: "follower"}, map[string]string{GroupAnnotation: "mbb"}), groups,
			State{Role: RoleFollower, Group: "mbb", Leader: "web-2", MakeBeforeBreak: true}},
		{"another value", testPod(map[string]string{DefaultRoleLabel: "Leader"}, map[string]string{GroupAnnotation: "web", TermAnnotation: "9"}), groups,
			State{Role: RoleFollower, Group: "web", Leader: "web-1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := observe(c.pod, c.groups); got != c.want {
				t.Errorf("observe = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestStateAtUnknown(t *testing.T) {
	leader := testPod(map[string]string{DefaultRoleLabel: "leader"}, map[string]string{GroupAnnotation: "web", TermAnnotation: "5"})
	groups := map[string]groupView{"web": {leader: "web-0"}}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const after = 5 * time.Second
	unknown := State{Role: RoleUnknown, Group: "web", Leader: "web-0", At: now}
	leading := State{Role: RoleLeader, Term: 5, Group: "web", Leader: "web-0", At: now}
	cases := []struct {
		name   string
		synced bool
		broken time.Time
		want   State
	}{
		{"not synced", false, time.Time{}, unknown},
		{"synced, healthy", true, time.Time{}, leading},
		{"broken for less than UnknownAfter", true, now.Add(-after + time.Millisecond), leading},
		{"broken for exactly UnknownAfter", true, now.Add(-after), unknown},
		{"broken for longer", true, now.Add(-time.Minute), unknown},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := stateAt(leader, groups, c.synced, c.broken, now, after); got != c.want {
				t.Errorf("stateAt = %+v, want %+v", got, c.want)
			}
		})
	}
}

func testGroup(name, roleLabel, leader string, matchLabels map[string]string) *unstructured.Unstructured {
	spec := map[string]any{}
	if matchLabels != nil {
		ml := map[string]any{}
		for k, v := range matchLabels {
			ml[k] = v
		}
		spec["selector"] = map[string]any{"matchLabels": ml}
	}
	if roleLabel != "" {
		spec["roleLabel"] = roleLabel
	}
	obj := map[string]any{
		"apiVersion": "podium.dev/v1alpha1",
		"kind":       "ElectionGroup",
		"metadata":   map[string]any{"name": name, "namespace": "prod"},
		"spec":       spec,
	}
	if leader != "" {
		obj["status"] = map[string]any{"leader": leader, "term": int64(1)}
	}
	return &unstructured.Unstructured{Object: obj}
}

func TestViewOf(t *testing.T) {
	v := viewOf(testGroup("web", "example.com/role", "web-2", map[string]string{"app": "web"}))
	if v.roleLabel != "example.com/role" || v.leader != "web-2" || v.selector == nil || v.selector.String() != "app=web" {
		t.Errorf("viewOf = %+v", v)
	}
	expr := testGroup("expr", "", "", nil)
	expr.Object["spec"].(map[string]any)["selector"] = map[string]any{
		"matchExpressions": []any{map[string]any{"key": "tier", "operator": "In", "values": []any{"a", "b"}}},
	}
	if v := viewOf(expr); v.selector == nil || v.selector.String() != "tier in (a,b)" {
		t.Errorf("matchExpressions selector = %v", v.selector)
	}
	bad := testGroup("bad", "", "", nil)
	bad.Object["spec"].(map[string]any)["selector"] = map[string]any{
		"matchExpressions": []any{map[string]any{"key": "tier", "operator": "Near"}},
	}
	if v := viewOf(bad); v.selector != nil {
		t.Errorf("invalid selector parsed as %v", v.selector)
	}
	for mode, want := range map[string]bool{MakeBeforeBreak: true, BreakBeforeMake: false, "": false, "makebeforebreak": false} {
		g := testGroup("web", "", "", map[string]string{"app": "web"})
		if mode != "" {
			g.Object["spec"].(map[string]any)["handoff"] = map[string]any{"mode": mode, "schedule": "@every 1h"}
		}
		if v := viewOf(g); v.makeBeforeBreak != want {
			t.Errorf("handoff.mode %q: makeBeforeBreak %v, want %v", mode, v.makeBeforeBreak, want)
		}
	}
	empty := testGroup("empty", "", "", nil)
	empty.Object["spec"].(map[string]any)["selector"] = map[string]any{}
	if v := viewOf(empty); v.selector != nil || v.leader != "" || v.roleLabel != "" {
		t.Errorf("empty selector: %+v", v)
	}
}

func TestIsMember(t *testing.T) {
	groups := map[string]groupView{
		"web":   viewOf(testGroup("web", "", "", map[string]string{"app": "web"})),
		"empty": viewOf(testGroup("empty", "", "", map[string]string{})),
	}
	cases := []struct {
		name string
		pod  *corev1.Pod
		want bool
	}{
		{"no pod", nil, false},
		{"selected", testPod(map[string]string{"app": "web", "x": "y"}, nil), true},
		{"not selected", testPod(map[string]string{"app": "db"}, nil), false},
		{"no labels (an empty selector selects nothing)", testPod(nil, nil), false},
		{"marked by podium", testPod(map[string]string{"app": "db"}, map[string]string{GroupAnnotation: "old"}), true},
	}
	for _, c := range cases {
		if got := isMember(c.pod, groups); got != c.want {
			t.Errorf("%s: isMember = %v, want %v", c.name, got, c.want)
		}
	}
}
