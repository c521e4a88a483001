// Package podium lets a process inside a member pod of a podium ElectionGroup follow its own
// role — leader or follower — and its fencing term, with callbacks shaped like client-go's
// leader election.
//
// podium (the operator) labels exactly one member pod of each ElectionGroup
// `<roleLabel>: leader`, every other member `<roleLabel>: follower`, writes the leader's term as
// the annotation `podium.dev/term` and marks every member it manages with
// `podium.dev/group: <group name>`. This package watches the process's own Pod (and only that
// Pod, through a field selector) and the ElectionGroups of its namespace, and turns what the
// watches show into a [State] and into [LeaderCallbacks]. Nothing is polled and nothing is
// written: the process learns its role within milliseconds of podium's write.
//
// A process that is cut off from the API server learns nothing. When either watch has been
// failing for longer than [Config.UnknownAfter], the role is [RoleUnknown]; leadership goes on
// (the term fences a partitioned leader) unless [Config.StepDownAfterUnknown] is set.
//
// In a group that hands over make-before-break ([State.MakeBeforeBreak]), a leader whose pod
// is stopping should keep working until podium has promoted its successor and demoted it:
// call [Elector.WaitHandover] on SIGTERM, before cancelling Run's context. Podium writes the
// successor's promotion a few milliseconds before the demotion, but the successor's watch
// may show its promotion after this pod's watch shows the demotion; so that no moment passes
// with no member believing it leads, set [Config.HandoverLinger]: after a demotion seen while
// WaitHandover waits, the leadership's context stays un-cancelled (and OnStoppedLeading waits)
// that much longer, within WaitHandover's grace. Both members believing they lead for that
// moment is the overlap MakeBeforeBreak accepts (the term still fences the old leader's
// writes). A demotion with no stop requested, or in a BreakBeforeMake group, ends the
// leadership at once.
package podium

import (
	"context"
	"errors"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// The keys podium writes on member pods.
const (
	// DefaultRoleLabel is the role label key when the group's spec.roleLabel is not set.
	DefaultRoleLabel = "podium.dev/role"
	// TermAnnotation holds the leader's fencing term, a decimal integer ≥ 1.
	TermAnnotation = "podium.dev/term"
	// GroupAnnotation names the ElectionGroup that manages the pod.
	GroupAnnotation = "podium.dev/group"
	// LeaderValue is the role label's value on the leader.
	LeaderValue = "leader"
	// FollowerValue is the role label's value on every other member.
	FollowerValue = "follower"
)

// The values of an ElectionGroup's spec.handoff.mode.
const (
	// BreakBeforeMake (the default): podium demotes the old leader before it promotes the new
	// one, so there are never two leaders.
	BreakBeforeMake = "BreakBeforeMake"
	// MakeBeforeBreak: podium promotes the new leader before it demotes the old one — also
	// when the old leader's pod is terminating — so the group is never without a working
	// leader, provided the old leader keeps working until it is demoted (see
	// Elector.WaitHandover).
	MakeBeforeBreak = "MakeBeforeBreak"
)

// ElectionGroupResource is the ElectionGroup custom resource (namespaced).
var ElectionGroupResource = schema.GroupVersionResource{
	Group:    "podium.dev",
	Version:  "v1alpha1",
	Resource: "electiongroups",
}

// Role is what the process's own Pod says about it.
type Role int

const (
	// RoleUnknown: the watches have not synced yet, or one of them has been failing for longer
	// than Config.UnknownAfter. The process cannot tell whether it still leads.
	RoleUnknown Role = iota
	// RoleFollower: the pod is a follower, or not (or no longer) labelled by podium.
	RoleFollower
	// RoleLeader: the pod carries the group's role label with the value "leader".
	RoleLeader
)

// String returns "unknown", "follower" or "leader".
func (r Role) String() string {
	switch r {
	case RoleLeader:
		return "leader"
	case RoleFollower:
		return "follower"
	default:
		return "unknown"
	}
}

// State is what a member knows about its election.
type State struct {
	// Role is the role the pod shows.
	Role Role
	// Term is the fencing term while the role is RoleLeader (the pod's podium.dev/term
	// annotation); 0 otherwise, and 0 when the annotation is absent or not an integer ≥ 1.
	Term int64
	// Group is the ElectionGroup that manages the pod, once podium has marked it.
	Group string
	// Leader is the group's current leader (its status.leader), as last seen.
	Leader string
	// MakeBeforeBreak: the group (the one Group names, as last seen) hands over
	// make-before-break (spec.handoff.mode MakeBeforeBreak). A leader whose pod is stopping
	// should then keep working until it is demoted: see Elector.WaitHandover.
	MakeBeforeBreak bool
	// At is when this state was first observed.
	At time.Time
}

// same reports whether two states say the same thing, whatever their times.
func (s State) same(o State) bool {
	return s.Role == o.Role && s.Term == o.Term && s.Group == o.Group && s.Leader == o.Leader &&
		s.MakeBeforeBreak == o.MakeBeforeBreak
}

// LeaderCallbacks has the shape and meaning of
// k8s.io/client-go/tools/leaderelection.LeaderCallbacks. Every callback is optional.
type LeaderCallbacks struct {
	// OnStartedLeading runs in its own goroutine when the watch shows this pod leading with a
	// term. Its context is cancelled when that leadership ends: the pod becomes a follower,
	// leads under another term (OnStartedLeading then runs again, with the new term, once this
	// call has returned), RoleUnknown has lasted Config.StepDownAfterUnknown, or Run's context
	// is cancelled. Two calls never run at the same time. TermFromContext(ctx) is the term of
	// this leadership.
	OnStartedLeading func(ctx context.Context)
	// OnStoppedLeading is called once a leadership has ended and its OnStartedLeading call has
	// returned. It is called only after an OnStartedLeading.
	OnStoppedLeading func()
	// OnNewLeader is called with the name of the group's leader (status.leader) whenever it
	// changes to another pod, this one included. It runs in a goroutine of its own, one call at
	// a time and in order; a slow callback is given only the latest leader.
	OnNewLeader func(identity string)
}

// Config says which pod this is, how it reaches the API server and what to call.
type Config struct {
	// Client reads the pod. Required.
	Client kubernetes.Interface
	// Dynamic reads the ElectionGroups. Required.
	Dynamic dynamic.Interface
	// Namespace of the pod; default: the environment variable POD_NAMESPACE.
	Namespace string
	// PodName is the name of the pod; default: the environment variable POD_NAME.
	PodName string
	// UnknownAfter is how long a watch may keep failing before the role is RoleUnknown;
	// default 5s.
	UnknownAfter time.Duration
	// StepDownAfterUnknown ends leadership once RoleUnknown has lasted this long; 0 (the
	// default): never, the leadership ends only when the watch shows it ended, and the term
	// fences a partitioned leader.
	StepDownAfterUnknown time.Duration
	// HandoverLinger is how long a leadership keeps its context (and OnStoppedLeading waits)
	// after the watch shows this pod demoted or gone, when that ends a handover this member
	// asked for: Elector.WaitHandover is waiting (the pod is stopping) in a MakeBeforeBreak
	// group. It covers the successor's notification latency — podium promoted the successor
	// first, but the successor's watch may show it a few milliseconds after this pod's watch
	// shows the demotion — so that some member always believes it leads; both believing for a
	// moment is the overlap that MakeBeforeBreak accepts. It never extends WaitHandover past
	// its grace. 0 (the default): no linger. Any other end of a leadership — a demotion with no
	// stop requested, a BreakBeforeMake group, Run's context done — cancels at once.
	// DefaultHandoverLinger is a good value.
	HandoverLinger time.Duration
	// Callbacks are called as leadership starts and ends.
	Callbacks LeaderCallbacks
}

// DefaultUnknownAfter is Config.UnknownAfter when it is not set.
const DefaultUnknownAfter = 5 * time.Second

// DefaultHandoverLinger is a Config.HandoverLinger that covers a successor's notification
// latency (milliseconds to tens of milliseconds) with room to spare; podium-member-go uses it
// unless told otherwise. Config.HandoverLinger is 0 when not set.
const DefaultHandoverLinger = 250 * time.Millisecond

// Errors that Run and NewElector return (wrapped; test them with errors.Is).
var (
	// ErrNoIdentity: the pod's name or namespace is not known.
	ErrNoIdentity = errors.New("POD_NAME and POD_NAMESPACE must name this pod (set them from the downward API: fieldRef metadata.name and metadata.namespace)")
	// ErrPodNotFound: the pod does not exist.
	ErrPodNotFound = errors.New("pod not found")
	// ErrNotMember: no ElectionGroup in the namespace selects the pod, and podium has not
	// marked it as a member.
	ErrNotMember = errors.New("not a member of any ElectionGroup")
	// ErrForbidden: RBAC forbids a read the member needs.
	ErrForbidden = errors.New("forbidden")
	// ErrNoSync: the first list and watch did not complete in time.
	ErrNoSync = errors.New("could not start watching")
	// ErrHandoverTimeout: Elector.WaitHandover's grace period elapsed while this pod still led.
	ErrHandoverTimeout = errors.New("no handover within the grace period")
)

// Run follows the role of the pod that cfg names and calls cfg.Callbacks until ctx is done,
// like leaderelection.RunOrDie, but returns an error instead of panicking: at once, before
// any callback, when the pod is not named, does not exist, is not a member of an
// ElectionGroup, or may not be read. It returns nil when ctx is done.
func Run(ctx context.Context, cfg Config) error {
	e, err := NewElector(cfg)
	if err != nil {
		return err
	}
	return e.Run(ctx)
}
