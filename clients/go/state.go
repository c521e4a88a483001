package podium

import (
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
)

// groupView is what an ElectionGroup says that the pod does not.
type groupView struct {
	// roleLabel is spec.roleLabel ("" when not set).
	roleLabel string
	// leader is status.leader ("" when there is none).
	leader string
	// selector is spec.selector; nil when absent, invalid or empty (an empty selector selects
	// nothing here, as podium rejects it).
	selector labels.Selector
	// makeBeforeBreak: spec.handoff.mode is MakeBeforeBreak.
	makeBeforeBreak bool
}

// viewOf reads the fields of an ElectionGroup that a member needs.
func viewOf(obj *unstructured.Unstructured) groupView {
	var v groupView
	v.roleLabel, _, _ = unstructured.NestedString(obj.Object, "spec", "roleLabel")
	v.leader, _, _ = unstructured.NestedString(obj.Object, "status", "leader")
	mode, _, _ := unstructured.NestedString(obj.Object, "spec", "handoff", "mode")
	v.makeBeforeBreak = mode == MakeBeforeBreak
	raw, found, err := unstructured.NestedMap(obj.Object, "spec", "selector")
	if !found || err != nil {
		return v
	}
	var ls metav1.LabelSelector
	if runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &ls) != nil {
		return v
	}
	sel, err := metav1.LabelSelectorAsSelector(&ls)
	if err != nil || sel.Empty() {
		return v
	}
	v.selector = sel
	return v
}

// observe is the role, term, group, leader and handoff mode that a pod shows (RoleUnknown is decided by the
// caller). A nil pod (not there, or deleted) is a follower.
func observe(pod *corev1.Pod, groups map[string]groupView) State {
	var s State
	s.Role = RoleFollower
	if pod == nil {
		return s
	}
	group, marked := pod.Annotations[GroupAnnotation]
	if !marked {
		return s
	}
	s.Group = group
	view, known := groups[group]
	if known {
		s.Leader = view.leader
		s.MakeBeforeBreak = view.makeBeforeBreak
	}
	key := DefaultRoleLabel
	if known && view.roleLabel != "" {
		key = view.roleLabel
	}
	if pod.Labels[key] != LeaderValue {
		return s
	}
	s.Role = RoleLeader
	if t, err := strconv.ParseInt(pod.Annotations[TermAnnotation], 10, 64); err == nil && t >= 1 {
		s.Term = t
	}
	return s
}

// health is one watch's failure record.
type health struct {
	// brokenSince is when the watch started failing; zero while it works.
	brokenSince time.Time
	// lastErr is its last failure.
	lastErr error
}

// stateAt is the state to publish at now: what the pod shows, unless the watches have not
// synced yet or one of them has been failing since brokenSince (zero: none is) for at least
// unknownAfter. An UNKNOWN state keeps the group, leader and handoff mode last seen, with no
// term.
func stateAt(pod *corev1.Pod, groups map[string]groupView, synced bool, brokenSince, now time.Time, unknownAfter time.Duration) State {
	s := observe(pod, groups)
	s.At = now
	if !synced || (!brokenSince.IsZero() && now.Sub(brokenSince) >= unknownAfter) {
		s.Role = RoleUnknown
		s.Term = 0
	}
	return s
}

// isMember reports whether the pod belongs to a group: podium marked it, or a group's
// selector selects it.
func isMember(pod *corev1.Pod, groups map[string]groupView) bool {
	if pod == nil {
		return false
	}
	if _, ok := pod.Annotations[GroupAnnotation]; ok {
		return true
	}
	set := labels.Set(pod.Labels)
	for _, g := range groups {
		if g.selector != nil && g.selector.Matches(set) {
			return true
		}
	}
	return false
}
