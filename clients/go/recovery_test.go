package podium

import (
	"errors"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	k8stesting "k8s.io/client-go/testing"
)

// outage makes the fake API server unreachable: while down, every list and watch of pods and
// ElectionGroups fails as a dial to a stopped API server does (connection refused), and going
// down ends the open watches as a dropped connection does.
type outage struct {
	down atomic.Bool

	mu      sync.Mutex
	watches []watch.Interface
}

// refused is the error a dial to a stopped API server returns.
var refused error = &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}

func newOutage(c *cluster) *outage {
	o := &outage{}
	fail := func(k8stesting.Action) (bool, runtime.Object, error) {
		if o.down.Load() {
			return true, nil, refused
		}
		return false, nil, nil
	}
	c.client.PrependReactor("list", "pods", fail)
	c.dynamic.PrependReactor("list", "electiongroups", fail)
	watchVia := func(tracker k8stesting.ObjectTracker) k8stesting.WatchReactionFunc {
		return func(a k8stesting.Action) (bool, watch.Interface, error) {
			if o.down.Load() {
				return true, nil, refused
			}
			// Like a watch resumed from a resourceVersion: only later changes, nothing
			// replayed.
			w, err := tracker.Watch(a.GetResource(), a.GetNamespace())
			if err == nil {
				o.mu.Lock()
				o.watches = append(o.watches, w)
				o.mu.Unlock()
			}
			return true, w, err
		}
	}
	c.client.PrependWatchReactor("pods", watchVia(c.client.Tracker()))
	c.dynamic.PrependWatchReactor("electiongroups", watchVia(c.dynamic.Tracker()))
	return o
}

// stop takes the API server down and drops the open watches.
func (o *outage) stop() {
	o.down.Store(true)
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, w := range o.watches {
		w.Stop()
	}
	o.watches = nil
}

// start brings the API server back.
func (o *outage) start() { o.down.Store(false) }

// TestUnknownRecoversPromptlyAfterOutage takes the whole API server away for longer than the
// reflectors' first backoffs, with no change to anything meanwhile. The member must turn
// UNKNOWN, and come back to LEADER within a few seconds of the API server's return — although
// a resumed watch sends nothing while nothing changes — without the role ever showing anything
// else and without the leadership restarting.
func TestUnknownRecoversPromptlyAfterOutage(t *testing.T) {
	t.Parallel()
	c := newCluster(t, member("web-0", LeaderValue, "5"), webGroup("web-0"))
	o := newOutage(c)
	r := &recorder{t: t}
	cfg := c.config(r.callbacks())
	cfg.UnknownAfter = 300 * time.Millisecond
	el := start(t, cfg)
	waitEvents(t, r, "started 5")

	var roles []Role
	var rmu sync.Mutex
	states := el.Subscribe()
	go func() {
		for s := range states {
			rmu.Lock()
			if len(roles) == 0 || roles[len(roles)-1] != s.Role {
				roles = append(roles, s.Role)
			}
			rmu.Unlock()
		}
	}()

	o.stop()
	waitState(t, el, "UNKNOWN", func(s State) bool { return s.Role == RoleUnknown })
	// Long enough for client-go's reflector backoff (800 ms doubling, up to 30 s, jittered up
	// to twice that) to reach several seconds.
	time.Sleep(7 * time.Second)
	if s := el.State(); s.Role != RoleUnknown {
		t.Fatalf("state during the outage %+v, want UNKNOWN", s)
	}
	o.start()
	back := time.Now()
	var s State
	waitFor(t, retryMax+time.Second, "LEADER after the outage", func() bool {
		s = el.State()
		return s.Role != RoleUnknown
	})
	t.Logf("back %s after the API server returned", time.Since(back))
	if s.Role != RoleLeader || s.Term != 5 {
		t.Errorf("after the outage %+v, want leading under term 5", s)
	}
	time.Sleep(100 * time.Millisecond)
	rmu.Lock()
	defer rmu.Unlock()
	if want := []Role{RoleLeader, RoleUnknown, RoleLeader}; !slices.Equal(roles, want) {
		t.Errorf("roles %v, want %v", roles, want)
	}
	if got := filter(r.snapshot(), "started", "done", "stopped"); !slices.Equal(got, []string{"started 5"}) {
		t.Errorf("the outage restarted the leadership: %q", got)
	}
}

func TestTransient(t *testing.T) {
	gr := schema.GroupResource{Resource: "pods"}
	tooLarge := apierrors.NewTimeoutError("Too large resource version", 1)
	tooLarge.ErrStatus.Details.Causes = []metav1.StatusCause{{Type: metav1.CauseTypeResourceVersionTooLarge, Message: "Too large resource version"}}
	for _, c := range []struct {
		err  error
		want bool
	}{
		{refused, true},
		{errors.New("http2: client connection lost"), true},
		{apierrors.NewServiceUnavailable("restarting"), true},
		{apierrors.NewTooManyRequests("slow down", 1), true},
		{apierrors.NewInternalError(errors.New("etcd")), true},
		{apierrors.NewTimeoutError("slow", 1), true},
		{tooLarge, false},
		{apierrors.NewResourceExpired("too old resource version"), false},
		{apierrors.NewGone("gone"), false},
		{apierrors.NewForbidden(gr, "", errors.New("no")), false},
		{apierrors.NewNotFound(gr, ""), false},
		{apierrors.NewUnauthorized("token expired"), false},
		{apierrors.NewBadRequest("bad selector"), false},
	} {
		if got := transient(c.err); got != c.want {
			t.Errorf("transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
