package podium

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	dynfake "k8s.io/client-go/dynamic/fake"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// cluster is a fake API server holding pods and ElectionGroups in namespace "prod".
type cluster struct {
	t       *testing.T
	client  *k8sfake.Clientset
	dynamic *dynfake.FakeDynamicClient
}

func newCluster(t *testing.T, objs ...runtime.Object) *cluster {
	t.Helper()
	var pods, groups []runtime.Object
	for _, o := range objs {
		if _, ok := o.(*unstructured.Unstructured); ok {
			groups = append(groups, o)
		} else {
			pods = append(pods, o)
		}
	}
	return &cluster{
		t:      t,
		client: k8sfake.NewClientset(pods...),
		dynamic: dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
			map[schema.GroupVersionResource]string{ElectionGroupResource: "ElectionGroupList"}, groups...),
	}
}

// member is pod name in group "web" (app=web), marked by podium, with a role ("" for none)
// and a term ("" for none).
func member(name, role, term string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Name: name, Namespace: "prod",
		Labels:      map[string]string{"app": "web"},
		Annotations: map[string]string{GroupAnnotation: "web"},
	}}
	if role != "" {
		p.Labels[DefaultRoleLabel] = role
	}
	if term != "" {
		p.Annotations[TermAnnotation] = term
	}
	return p
}

func webGroup(leader string) *unstructured.Unstructured {
	return testGroup("web", "", leader, map[string]string{"app": "web"})
}

// setRole writes what podium would write on pod web-0: the role label, and the term on a leader.
func (c *cluster) setRole(role string, term int) {
	c.t.Helper()
	pods := c.client.CoreV1().Pods("prod")
	p, err := pods.Get(context.Background(), "web-0", metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	p.Labels[DefaultRoleLabel] = role
	if role == LeaderValue {
		p.Annotations[TermAnnotation] = strconv.Itoa(term)
	} else {
		delete(p.Annotations, TermAnnotation)
	}
	if _, err := pods.Update(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) setLeader(leader string) {
	c.t.Helper()
	groups := c.dynamic.Resource(ElectionGroupResource).Namespace("prod")
	g, err := groups.Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	if err := unstructured.SetNestedField(g.Object, leader, "status", "leader"); err != nil {
		c.t.Fatal(err)
	}
	if _, err := groups.Update(context.Background(), g, metav1.UpdateOptions{}); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) config(cb LeaderCallbacks) Config {
	return Config{Client: c.client, Dynamic: c.dynamic, Namespace: "prod", PodName: "web-0", Callbacks: cb}
}

// running is an elector whose Run goes on in the background.
type running struct {
	*Elector
	cancel context.CancelFunc
	result chan error
}

// start runs an elector and waits until it has a complete view (both watches open), so that
// every later change reaches it. stop cancels Run and returns its result.
func start(t *testing.T, cfg Config) *running {
	t.Helper()
	el, err := NewElector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Elector: el, cancel: cancel, result: make(chan error, 1)}
	go func() { r.result <- el.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	waitFor(t, 3*time.Second, "the first view", func() bool {
		select {
		case err := <-r.result:
			t.Fatalf("Run returned early: %v", err)
		default:
		}
		return el.synced.Load() && el.State().Role != RoleUnknown
	})
	return r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.result:
		if ok && err != nil {
			t.Errorf("Run returned %v after its context was cancelled, want nil", err)
		}
		if ok {
			close(r.result)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
}

func waitState(t *testing.T, el *running, what string, cond func(State) bool) State {
	t.Helper()
	var s State
	// Long enough for a reflector's backoff (up to 1.6 s, then up to 3.2 s) after a failure.
	waitFor(t, 6*time.Second, what, func() bool {
		s = el.State()
		return cond(s)
	})
	return s
}

func TestElectorCallbacksAcrossTerms(t *testing.T) {
	c := newCluster(t, member("web-0", FollowerValue, ""), member("web-1", LeaderValue, "1"), webGroup("web-1"))
	r := &recorder{t: t}
	el := start(t, c.config(r.callbacks()))
	if s := el.State(); s.Role != RoleFollower || s.Term != 0 || s.Group != "web" || s.Leader != "web-1" || el.IsLeader() {
		t.Fatalf("first state %+v, want a follower of web-1 in web", s)
	}

	c.setRole(LeaderValue, 2)
	waitEvents(t, r, "started 2")
	if !el.IsLeader() || el.Term() != 2 {
		t.Errorf("IsLeader %v, Term %d while leading under term 2", el.IsLeader(), el.Term())
	}
	c.setRole(FollowerValue, 0)
	waitEvents(t, r, "started 2", "done 2", "stopped")
	if el.IsLeader() || el.Term() != 0 {
		t.Errorf("IsLeader %v, Term %d as a follower", el.IsLeader(), el.Term())
	}
	c.setRole(LeaderValue, 3)
	waitEvents(t, r, "started 2", "done 2", "stopped", "started 3")

	el.stop(t)
	waitEvents(t, r, "started 2", "done 2", "stopped", "started 3", "done 3", "stopped")
	if s := <-el.Subscribe(); s.Term != 3 {
		t.Errorf("a subscriber after Run returned got %+v, want the last state", s)
	}
}

func TestElectorTermChangeWhileLeadingRestarts(t *testing.T) {
	c := newCluster(t, member("web-0", LeaderValue, "4"), webGroup("web-0"))
	r := &recorder{t: t, linger: 30 * time.Millisecond}
	el := start(t, c.config(r.callbacks()))
	waitEvents(t, r, "started 4")
	c.setRole(LeaderValue, 5)
	waitEvents(t, r, "started 4", "done 4", "stopped", "started 5")
	if el.Term() != 5 {
		t.Errorf("Term() = %d, want 5", el.Term())
	}
}

func TestElectorPodDeletedIsFollower(t *testing.T) {
	c := newCluster(t, member("web-0", LeaderValue, "2"), webGroup("web-0"))
	r := &recorder{t: t}
	el := start(t, c.config(r.callbacks()))
	waitEvents(t, r, "started 2")
	if err := c.client.CoreV1().Pods("prod").Delete(context.Background(), "web-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEvents(t, r, "started 2", "done 2", "stopped")
	if s := el.State(); s.Role != RoleFollower || s.Term != 0 {
		t.Errorf("state of a deleted pod %+v, want a follower", s)
	}
}

func TestElectorOnNewLeader(t *testing.T) {
	c := newCluster(t, member("web-0", FollowerValue, ""), webGroup("web-1"))
	r := &recorder{t: t}
	start(t, c.config(r.callbacks()))
	want := []string{"new_leader web-1"}
	wait := func() {
		t.Helper()
		waitFor(t, 3*time.Second, "new_leader events "+strings.Join(want, ", "), func() bool {
			return slices.Equal(filter(r.snapshot(), "new_leader"), want)
		})
	}
	wait()
	c.setLeader("web-2")
	want = append(want, "new_leader web-2")
	wait()
	c.setRole(LeaderValue, 7) // the pod's own change is not a new leader until the group says so
	waitEvents(t, r, "started 7")
	c.setLeader("web-0")
	want = append(want, "new_leader web-0")
	wait()
}

func TestSubscribeCoalescesLive(t *testing.T) {
	c := newCluster(t, member("web-0", LeaderValue, "1"), webGroup("web-0"))
	el := start(t, c.config(LeaderCallbacks{}))
	ch := el.Subscribe()
	if s := <-ch; s.Role != RoleLeader || s.Term != 1 {
		t.Fatalf("first state %+v, want leading under term 1", s)
	}
	for term := 2; term <= 21; term++ {
		c.setRole(LeaderValue, term)
	}
	waitState(t, el, "term 21", func(s State) bool { return s.Term == 21 })
	if s := <-ch; s.Role != RoleLeader || s.Term != 21 {
		t.Errorf("a subscriber that did not read got %+v, want the latest state (term 21)", s)
	}
	if n := len(ch); n != 0 {
		t.Errorf("%d more states queued after the latest", n)
	}
}

func TestSubscribeCoalesces(t *testing.T) {
	c := newCluster(t)
	el, err := NewElector(c.config(LeaderCallbacks{}))
	if err != nil {
		t.Fatal(err)
	}
	ch := el.Subscribe()
	if s := <-ch; s.Role != RoleUnknown {
		t.Fatalf("state before Run %+v, want unknown", s)
	}
	for term := int64(1); term <= 20; term++ {
		el.publish(State{Role: RoleLeader, Term: term, Group: "web", At: time.Now()})
	}
	if s := <-ch; s.Term != 20 {
		t.Errorf("got term %d, want the latest (20)", s.Term)
	}
	select {
	case s := <-ch:
		t.Errorf("a backlog: %+v after the latest", s)
	default:
	}
	// The same facts at another time are not a change.
	el.publish(State{Role: RoleLeader, Term: 20, Group: "web", At: time.Now().Add(time.Hour)})
	if n := len(ch); n != 0 {
		t.Errorf("an unchanged state was published again")
	}
	// A new subscriber gets the current state first.
	if s := <-el.Subscribe(); s.Term != 20 {
		t.Errorf("a new subscriber got %+v first, want term 20", s)
	}
}

// runErr runs an elector that must fail, and checks that no callback ran.
func runErr(t *testing.T, c *cluster) error {
	t.Helper()
	var called atomic.Bool
	cfg := c.config(LeaderCallbacks{
		OnStartedLeading: func(context.Context) { called.Store(true) },
		OnStoppedLeading: func() { called.Store(true) },
		OnNewLeader:      func(string) { called.Store(true) },
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	began := time.Now()
	err := Run(ctx, cfg)
	if err == nil {
		t.Fatal("Run returned nil")
	}
	if elapsed := time.Since(began); elapsed > 2*time.Second {
		t.Errorf("Run took %s to fail", elapsed)
	}
	if called.Load() {
		t.Error("a callback ran before Run failed")
	}
	return err
}

func TestRunErrors(t *testing.T) {
	t.Run("missing env", func(t *testing.T) {
		t.Setenv("POD_NAME", "")
		t.Setenv("POD_NAMESPACE", "prod")
		c := newCluster(t, member("web-0", FollowerValue, ""), webGroup(""))
		cfg := c.config(LeaderCallbacks{})
		cfg.Namespace, cfg.PodName = "", ""
		if _, err := NewElector(cfg); !errors.Is(err, ErrNoIdentity) || !strings.Contains(err.Error(), "POD_NAME") {
			t.Errorf("NewElector: %v, want ErrNoIdentity", err)
		}
		if err := Run(context.Background(), cfg); !errors.Is(err, ErrNoIdentity) {
			t.Errorf("Run: %v, want ErrNoIdentity", err)
		}
		t.Setenv("POD_NAME", "web-0")
		el, err := NewElector(cfg)
		if err != nil {
			t.Fatalf("with POD_NAME and POD_NAMESPACE set: %v", err)
		}
		if el.cfg.PodName != "web-0" || el.cfg.Namespace != "prod" || el.cfg.UnknownAfter != DefaultUnknownAfter {
			t.Errorf("config from the environment: %+v", el.cfg)
		}
	})
	t.Run("pod does not exist", func(t *testing.T) {
		err := runErr(t, newCluster(t, member("web-1", FollowerValue, ""), webGroup("")))
		if !errors.Is(err, ErrPodNotFound) || !strings.Contains(err.Error(), "prod/web-0") {
			t.Errorf("got %v, want ErrPodNotFound naming prod/web-0", err)
		}
	})
	t.Run("not a member", func(t *testing.T) {
		p := member("web-0", "", "")
		p.Labels["app"] = "db"
		delete(p.Annotations, GroupAnnotation)
		err := runErr(t, newCluster(t, p, webGroup("")))
		if !errors.Is(err, ErrNotMember) {
			t.Errorf("got %v, want ErrNotMember", err)
		}
	})
	t.Run("forbidden to list pods", func(t *testing.T) {
		c := newCluster(t, member("web-0", FollowerValue, ""), webGroup(""))
		c.client.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New("no RBAC policy matched"))
		})
		err := runErr(t, c)
		for _, want := range []string{"list pods", "no RBAC policy matched", "get, list and watch on pods and on electiongroups.podium.dev", "config/samples/member-rbac.yaml"} {
			if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), want) {
				t.Errorf("got %v, want ErrForbidden saying %q", err, want)
			}
		}
	})
	t.Run("forbidden to watch electiongroups", func(t *testing.T) {
		c := newCluster(t, member("web-0", FollowerValue, ""), webGroup(""))
		c.dynamic.PrependWatchReactor("electiongroups", func(k8stesting.Action) (bool, watch.Interface, error) {
			return true, nil, apierrors.NewForbidden(ElectionGroupResource.GroupResource(), "", errors.New("no RBAC policy matched"))
		})
		err := runErr(t, c)
		if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "watch electiongroups.podium.dev") || !strings.Contains(err.Error(), "member-rbac.yaml") {
			t.Errorf("got %v, want ErrForbidden about watching electiongroups", err)
		}
	})
}

func TestRunMemberBySelectorOnly(t *testing.T) {
	p := member("web-0", "", "")
	delete(p.Annotations, GroupAnnotation) // podium has not marked it yet
	c := newCluster(t, p, webGroup("web-1"))
	el := start(t, c.config(LeaderCallbacks{}))
	if s := el.State(); s.Role != RoleFollower || s.Group != "" {
		t.Errorf("state of an unmarked member %+v, want a follower of no group yet", s)
	}
}

func TestRunTwice(t *testing.T) {
	c := newCluster(t, member("web-0", FollowerValue, ""), webGroup(""))
	el := start(t, c.config(LeaderCallbacks{}))
	if err := el.Run(context.Background()); err == nil {
		t.Error("a second Run returned nil")
	}
}

// TestUnknownAfterWatchErrors breaks the pod's watch and makes every list fail: past
// UnknownAfter the role is UNKNOWN (term 0, group and leader kept) and, by default, the
// leadership goes on; once lists succeed again the role is back.
func TestUnknownAfterWatchErrors(t *testing.T) {
	t.Parallel()
	c := newCluster(t, member("web-0", LeaderValue, "5"), webGroup("web-0"))
	var (
		failing atomic.Bool
		mu      sync.Mutex
		current watch.Interface
	)
	c.client.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		if failing.Load() {
			return true, nil, apierrors.NewServiceUnavailable("the server is restarting")
		}
		return false, nil, nil
	})
	c.client.PrependWatchReactor("pods", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := c.client.Tracker().Watch(a.GetResource(), a.GetNamespace())
		mu.Lock()
		current = w
		mu.Unlock()
		return true, w, err
	})
	r := &recorder{t: t}
	cfg := c.config(r.callbacks())
	cfg.UnknownAfter = 100 * time.Millisecond
	el := start(t, cfg)
	waitEvents(t, r, "started 5")

	failing.Store(true)
	mu.Lock()
	current.Stop()
	mu.Unlock()
	began := time.Now()
	s := waitState(t, el, "UNKNOWN", func(s State) bool { return s.Role == RoleUnknown })
	if s.Term != 0 || s.Group != "web" || s.Leader != "web-0" || el.IsLeader() {
		t.Errorf("UNKNOWN state %+v: want term 0, group and leader kept", s)
	}
	if since, err := el.brokenSince(); since.IsZero() || err == nil || s.At.Sub(since) < cfg.UnknownAfter {
		t.Errorf("UNKNOWN at %s, broken since %s (%v): sooner than UnknownAfter", s.At, since, err)
	}
	time.Sleep(50 * time.Millisecond)
	if got := filter(r.snapshot(), "started", "done", "stopped"); !slices.Equal(got, []string{"started 5"}) {
		t.Errorf("UNKNOWN ended the leadership: %q", got)
	}
	t.Logf("UNKNOWN %s after the watch broke", time.Since(began))

	failing.Store(false)
	s = waitState(t, el, "recovery", func(s State) bool { return s.Role != RoleUnknown })
	if s.Role != RoleLeader || s.Term != 5 {
		t.Errorf("after recovery %+v, want leading under term 5", s)
	}
	if got := filter(r.snapshot(), "started", "done", "stopped"); !slices.Equal(got, []string{"started 5"}) {
		t.Errorf("recovery restarted the leadership: %q", got)
	}
}

// TestUnknownAfterWatchErrorsStepDown is the same break with StepDownAfterUnknown set.
func TestUnknownAfterWatchErrorsStepDown(t *testing.T) {
	t.Parallel()
	c := newCluster(t, member("web-0", LeaderValue, "5"), webGroup("web-0"))
	var failing atomic.Bool
	c.dynamic.PrependReactor("list", "electiongroups", func(k8stesting.Action) (bool, runtime.Object, error) {
		if failing.Load() {
			return true, nil, errors.New("connection refused")
		}
		return false, nil, nil
	})
	var mu sync.Mutex
	var current watch.Interface
	c.dynamic.PrependWatchReactor("electiongroups", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := c.dynamic.Tracker().Watch(a.GetResource(), a.GetNamespace())
		mu.Lock()
		current = w
		mu.Unlock()
		return true, w, err
	})
	r := &recorder{t: t}
	cfg := c.config(r.callbacks())
	cfg.UnknownAfter = 50 * time.Millisecond
	cfg.StepDownAfterUnknown = 100 * time.Millisecond
	el := start(t, cfg)
	waitEvents(t, r, "started 5")
	failing.Store(true)
	mu.Lock()
	current.Stop()
	mu.Unlock()
	s := waitState(t, el, "UNKNOWN", func(s State) bool { return s.Role == RoleUnknown })
	waitEvents(t, r, "started 5", "done 5", "stopped")
	if time.Since(s.At) < cfg.StepDownAfterUnknown {
		t.Errorf("stepped down %s after UNKNOWN, want at least %s", time.Since(s.At), cfg.StepDownAfterUnknown)
	}
	failing.Store(false)
	waitState(t, el, "recovery", func(s State) bool { return s.Role == RoleLeader })
	waitEvents(t, r, "started 5", "done 5", "stopped", "started 5")
}

// mbbGroup is webGroup handing over make-before-break.
func mbbGroup(leader string) *unstructured.Unstructured {
	g := webGroup(leader)
	g.Object["spec"].(map[string]any)["handoff"] = map[string]any{"mode": MakeBeforeBreak}
	return g
}

// setMode writes spec.handoff.mode of group web.
func (c *cluster) setMode(mode string) {
	c.t.Helper()
	groups := c.dynamic.Resource(ElectionGroupResource).Namespace("prod")
	g, err := groups.Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	if err := unstructured.SetNestedField(g.Object, mode, "spec", "handoff", "mode"); err != nil {
		c.t.Fatal(err)
	}
	if _, err := groups.Update(context.Background(), g, metav1.UpdateOptions{}); err != nil {
		c.t.Fatal(err)
	}
}

// waitHandover calls WaitHandover in the background; the channel gets its result.
func waitHandover(el *running, ctx context.Context, grace time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() { done <- el.WaitHandover(ctx, grace) }()
	return done
}

func TestStateMakeBeforeBreak(t *testing.T) {
	c := newCluster(t, member("web-0", LeaderValue, "3"), webGroup("web-0"))
	el := start(t, c.config(LeaderCallbacks{}))
	if s := el.State(); s.MakeBeforeBreak {
		t.Errorf("state %+v of a group without handoff.mode: want break-before-make", s)
	}
	c.setMode(MakeBeforeBreak)
	waitState(t, el, "make-before-break", func(s State) bool { return s.MakeBeforeBreak })
	c.setMode(BreakBeforeMake)
	waitState(t, el, "break-before-make", func(s State) bool { return !s.MakeBeforeBreak })
}

// TestWaitHandoverMakeBeforeBreak: a leader of a make-before-break group waits until the watch
// shows it demoted; the leadership ends then, not when WaitHandover is called.
func TestWaitHandoverMakeBeforeBreak(t *testing.T) {
	c := newCluster(t, member("web-0", LeaderValue, "4"), mbbGroup("web-0"))
	r := &recorder{t: t}
	el := start(t, c.config(r.callbacks()))
	waitEvents(t, r, "started 4")
	if s := el.State(); !s.MakeBeforeBreak {
		t.Fatalf("state %+v: want make-before-break", s)
	}
	done := waitHandover(el, context.Background(), 5*time.Second)
	select {
	case err := <-done:
		t.Fatalf("WaitHandover returned %v while still leading", err)
	case <-time.After(150 * time.Millisecond):
	}
	c.setLeader("web-1") // the successor is promoted first: still leading
	select {
	case err := <-done:
		t.Fatalf("WaitHandover returned %v once the successor was promoted, before the demotion", err)
	case <-time.After(100 * time.Millisecond):
	}
	c.setRole(FollowerValue, 0)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("WaitHandover after the demotion: %v, want nil", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("WaitHandover did not return after the demotion")
	}
	waitEvents(t, r, "started 4", "done 4", "stopped")
	// Not leading any more: at once.
	if err := el.WaitHandover(context.Background(), 5*time.Second); err != nil {
		t.Errorf("WaitHandover as a follower: %v", err)
	}
}

func TestWaitHandoverPodDeleted(t *testing.T) {
	c := newCluster(t, member("web-0", LeaderValue, "4"), mbbGroup("web-0"))
	r := &recorder{t: t}
	el := start(t, c.config(r.callbacks()))
	waitEvents(t, r, "started 4")
	done := waitHandover(el, context.Background(), 5*time.Second)
	if err := c.client.CoreV1().Pods("prod").Delete(context.Background(), "web-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("WaitHandover after the pod was deleted: %v, want nil", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("WaitHandover did not return after the pod was deleted")
	}
}

func TestWaitHandoverGraceAndContext(t *testing.T) {
	c := newCluster(t, member("web-0", LeaderValue, "4"), mbbGroup("web-0"))
	r := &recorder{t: t}
	el := start(t, c.config(r.callbacks()))
	waitEvents(t, r, "started 4")

	began := time.Now()
	err := el.WaitHandover(context.Background(), 200*time.Millisecond)
	if !errors.Is(err, ErrHandoverTimeout) {
		t.Errorf("WaitHandover past its grace: %v, want ErrHandoverTimeout", err)
	}
	if elapsed := time.Since(began); elapsed < 200*time.Millisecond || elapsed > 2*time.Second {
		t.Errorf("WaitHandover returned after %s, want the grace (200ms)", elapsed)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := el.WaitHandover(ctx, 5*time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitHandover with its context done: %v, want the context's error", err)
	}
	if err := el.WaitHandover(context.Background(), 0); err != nil {
		t.Errorf("WaitHandover with no grace: %v, want nil at once", err)
	}
	if got := filter(r.snapshot(), "started", "done", "stopped"); !slices.Equal(got, []string{"started 4"}) {
		t.Errorf("WaitHandover ended the leadership: %q", got)
	}

	// Run's context done ends the leadership, and the wait.
	done := waitHandover(el, context.Background(), 5*time.Second)
	el.stop(t)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("WaitHandover when Run stopped: %v, want nil", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("WaitHandover did not return when Run stopped")
	}
	if err := el.WaitHandover(context.Background(), 5*time.Second); err != nil {
		t.Errorf("WaitHandover after Run returned: %v, want nil at once", err)
	}
}

func TestWaitHandoverReturnsAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pod   *corev1.Pod
		group *unstructured.Unstructured
	}{
		{"break-before-make leader", member("web-0", LeaderValue, "4"), webGroup("web-0")},
		{"make-before-break follower", member("web-0", FollowerValue, ""), mbbGroup("web-1")},
		{"make-before-break leader without a term", member("web-0", LeaderValue, ""), mbbGroup("web-0")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, tc.pod, tc.group)
			el := start(t, c.config(LeaderCallbacks{}))
			time.Sleep(50 * time.Millisecond) // let a leadership start, if it would
			began := time.Now()
			if err := el.WaitHandover(context.Background(), 5*time.Second); err != nil {
				t.Errorf("WaitHandover: %v, want nil", err)
			}
			if elapsed := time.Since(began); elapsed > 100*time.Millisecond {
				t.Errorf("WaitHandover took %s, want at once", elapsed)
			}
		})
	}
	// Before Run.
	c := newCluster(t, member("web-0", LeaderValue, "4"), mbbGroup("web-0"))
	el, err := NewElector(c.config(LeaderCallbacks{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := el.WaitHandover(context.Background(), 5*time.Second); err != nil {
		t.Errorf("WaitHandover before Run: %v, want nil", err)
	}
}

// lingerConfig is c.config with a handover linger.
func lingerConfig(c *cluster, r *recorder, linger time.Duration) Config {
	cfg := c.config(r.callbacks())
	cfg.HandoverLinger = linger
	return cfg
}

// requested waits until WaitHandover is waiting: a stop has been requested.
func requested(t *testing.T, el *running) {
	t.Helper()
	waitFor(t, 3*time.Second, "WaitHandover waiting", func() bool {
		_, ok := el.handoverRequested()
		return ok
	})
}

// demoted waits until the elector shows web-0 a follower and returns when it saw it.
func demoted(t *testing.T, el *running) time.Time {
	t.Helper()
	waitState(t, el, "the demotion", func(s State) bool { return s.Role == RoleFollower })
	return time.Now()
}

// TestHandoverLingerMakeBeforeBreak: with a stop requested (WaitHandover waiting) in a
// make-before-break group, the demotion ends the leadership only HandoverLinger later: the
// context stays alive, OnStoppedLeading waits, and WaitHandover returns after the linger.
func TestHandoverLingerMakeBeforeBreak(t *testing.T) {
	const linger = 400 * time.Millisecond
	for _, tc := range []struct {
		name   string
		demote func(c *cluster)
	}{
		{"demoted", func(c *cluster) { c.setRole(FollowerValue, 0) }},
		{"pod deleted", func(c *cluster) {
			if err := c.client.CoreV1().Pods("prod").Delete(context.Background(), "web-0", metav1.DeleteOptions{}); err != nil {
				c.t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, member("web-0", LeaderValue, "4"), mbbGroup("web-0"))
			r := &recorder{t: t}
			el := start(t, lingerConfig(c, r, linger))
			waitEvents(t, r, "started 4")
			done := waitHandover(el, context.Background(), 5*time.Second)
			requested(t, el)
			c.setLeader("web-1") // the successor is promoted first
			tc.demote(c)
			seen := demoted(t, el)

			// Still leading, a while after the demotion was seen.
			time.Sleep(linger / 2)
			if got := filter(r.snapshot(), "started", "done", "stopped"); !slices.Equal(got, []string{"started 4"}) {
				t.Fatalf("events %q %s after the demotion, want the leadership lingering", got, time.Since(seen))
			}
			select {
			case err := <-done:
				t.Fatalf("WaitHandover returned %v during the linger", err)
			default:
			}

			// Then the context is cancelled, OnStoppedLeading runs, and WaitHandover returns.
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("WaitHandover after the linger: %v, want nil", err)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("WaitHandover did not return after the linger")
			}
			waitEvents(t, r, "started 4", "done 4", "stopped")
			if elapsed := time.Since(seen); elapsed < linger-50*time.Millisecond || elapsed > linger+time.Second {
				t.Errorf("the leadership ended %s after the demotion, want about the linger (%s)", elapsed, linger)
			}
		})
	}
}

// TestHandoverLingerOnlyWhenStopping: with no stop requested, a demotion in a
// make-before-break group ends the leadership at once, linger or not.
func TestHandoverLingerOnlyWhenStopping(t *testing.T) {
	c := newCluster(t, member("web-0", LeaderValue, "4"), mbbGroup("web-0"))
	r := &recorder{t: t}
	el := start(t, lingerConfig(c, r, 2*time.Second))
	waitEvents(t, r, "started 4")
	c.setLeader("web-1")
	c.setRole(FollowerValue, 0)
	seen := demoted(t, el)
	waitEvents(t, r, "started 4", "done 4", "stopped")
	if elapsed := time.Since(seen); elapsed > 500*time.Millisecond {
		t.Errorf("the leadership ended %s after the demotion, want at once", elapsed)
	}

	// Nor after a WaitHandover that gave up (its context done): the request is over.
	c.setRole(LeaderValue, 5)
	waitEvents(t, r, "started 4", "done 4", "stopped", "started 5")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := el.WaitHandover(ctx, 5*time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitHandover with its context done: %v", err)
	}
	c.setRole(FollowerValue, 0)
	seen = demoted(t, el)
	waitEvents(t, r, "started 4", "done 4", "stopped", "started 5", "done 5", "stopped")
	if elapsed := time.Since(seen); elapsed > 500*time.Millisecond {
		t.Errorf("the leadership ended %s after the demotion, want at once", elapsed)
	}
}

// TestHandoverLingerBreakBeforeMake: in a break-before-make group nothing lingers —
// WaitHandover returns at once and the demotion ends the leadership at once.
func TestHandoverLingerBreakBeforeMake(t *testing.T) {
	c := newCluster(t, member("web-0", LeaderValue, "4"), webGroup("web-0"))
	r := &recorder{t: t}
	el := start(t, lingerConfig(c, r, 2*time.Second))
	waitEvents(t, r, "started 4")
	began := time.Now()
	if err := el.WaitHandover(context.Background(), 5*time.Second); err != nil {
		t.Errorf("WaitHandover: %v, want nil", err)
	}
	if elapsed := time.Since(began); elapsed > 100*time.Millisecond {
		t.Errorf("WaitHandover took %s, want at once", elapsed)
	}
	c.setRole(FollowerValue, 0)
	seen := demoted(t, el)
	waitEvents(t, r, "started 4", "done 4", "stopped")
	if elapsed := time.Since(seen); elapsed > 500*time.Millisecond {
		t.Errorf("the leadership ended %s after the demotion, want at once", elapsed)
	}
}

// TestHandoverLingerWithinGrace: the linger never takes the wait past its grace, and a demotion
// seen in time is no timeout even when the grace cuts its linger short.
func TestHandoverLingerWithinGrace(t *testing.T) {
	const grace = 500 * time.Millisecond
	c := newCluster(t, member("web-0", LeaderValue, "4"), mbbGroup("web-0"))
	r := &recorder{t: t}
	el := start(t, lingerConfig(c, r, 5*time.Second))
	waitEvents(t, r, "started 4")
	began := time.Now()
	done := waitHandover(el, context.Background(), grace)
	requested(t, el)
	c.setRole(FollowerValue, 0)
	demoted(t, el)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("WaitHandover: %v, want nil", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("WaitHandover did not return")
	}
	if elapsed := time.Since(began); elapsed < grace-50*time.Millisecond || elapsed > grace+500*time.Millisecond {
		t.Errorf("WaitHandover returned after %s, want the grace (%s)", elapsed, grace)
	}
	waitEvents(t, r, "started 4", "done 4", "stopped")
}

// TestHandoverLingerRunStopped: Run's context done cuts the linger short.
func TestHandoverLingerRunStopped(t *testing.T) {
	c := newCluster(t, member("web-0", LeaderValue, "4"), mbbGroup("web-0"))
	r := &recorder{t: t}
	el := start(t, lingerConfig(c, r, 5*time.Second))
	waitEvents(t, r, "started 4")
	done := waitHandover(el, context.Background(), 10*time.Second)
	requested(t, el)
	c.setRole(FollowerValue, 0)
	demoted(t, el)
	time.Sleep(50 * time.Millisecond)
	began := time.Now()
	el.stop(t)
	if elapsed := time.Since(began); elapsed > time.Second {
		t.Errorf("Run returned %s after its context was cancelled during the linger, want at once", elapsed)
	}
	waitEvents(t, r, "started 4", "done 4", "stopped")
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("WaitHandover: %v, want nil", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("WaitHandover did not return when Run stopped")
	}
}

func TestNewElectorRejectsNegativeLinger(t *testing.T) {
	c := newCluster(t)
	cfg := c.config(LeaderCallbacks{})
	cfg.HandoverLinger = -time.Second
	if _, err := NewElector(cfg); err == nil {
		t.Error("NewElector accepted a negative HandoverLinger")
	}
}
