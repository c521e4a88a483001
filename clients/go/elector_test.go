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
