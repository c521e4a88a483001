package podium

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// The two watches.
const (
	watchPod = iota
	watchGroups
)

// resources names what each watch reads, as RBAC names it.
var resources = [2]string{"pods", "electiongroups.podium.dev"}

// rbacHint says what a member needs, for every permission error.
const rbacHint = "a member needs get, list and watch on pods and on electiongroups.podium.dev in its own namespace: a Role and RoleBinding like config/samples/member-rbac.yaml"

// syncTimeout is how long Run waits for the first complete view of the pod and the groups.
var syncTimeout = 30 * time.Second

// syncPoll is how often Run checks whether the first lists have been stored.
const syncPoll = 10 * time.Millisecond

// Elector follows the role of one member pod. Create it with NewElector, start it with Run;
// its other methods may be called at any time, from any goroutine.
type Elector struct {
	cfg Config

	// mu guards state, subs and closed.
	mu     sync.Mutex
	state  State
	subs   []chan State
	closed bool

	running atomic.Bool
	// synced is set once the first view is complete and the pod is known to be a member;
	// before that, permission errors end Run.
	synced atomic.Bool

	// hmu guards health.
	hmu    sync.Mutex
	health [2]health

	// kick wakes the state loop (capacity 1: wake-ups coalesce).
	kick chan struct{}
	// fatal carries an error that ends Run before the first view is complete.
	fatal chan error

	// watchStarts counts watches opened, per watch (tests wait on it).
	watchStarts [2]atomic.Int64
}

// NewElector checks cfg, fills in its defaults and returns an Elector that has not started.
// The pod's name and namespace default to the environment variables POD_NAME and
// POD_NAMESPACE; an error wrapping ErrNoIdentity says that neither names it.
func NewElector(cfg Config) (*Elector, error) {
	if cfg.Client == nil || cfg.Dynamic == nil {
		return nil, errors.New("podium: Config.Client and Config.Dynamic are required")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = os.Getenv("POD_NAMESPACE")
	}
	if cfg.PodName == "" {
		cfg.PodName = os.Getenv("POD_NAME")
	}
	if cfg.Namespace == "" || cfg.PodName == "" {
		return nil, &memberError{kind: ErrNoIdentity, msg: "podium: " + ErrNoIdentity.Error()}
	}
	if cfg.UnknownAfter < 0 || cfg.StepDownAfterUnknown < 0 {
		return nil, errors.New("podium: Config.UnknownAfter and Config.StepDownAfterUnknown must not be negative")
	}
	if cfg.UnknownAfter == 0 {
		cfg.UnknownAfter = DefaultUnknownAfter
	}
	return &Elector{
		cfg:   cfg,
		state: State{Role: RoleUnknown, At: time.Now()},
		kick:  make(chan struct{}, 1),
		fatal: make(chan error, 1),
	}, nil
}

// memberError is an error with a message of its own that wraps one of the package's errors.
type memberError struct {
	kind error
	msg  string
}

func (e *memberError) Error() string { return e.msg }
func (e *memberError) Unwrap() error { return e.kind }

// IsLeader reports whether the watch shows this pod leading now.
func (e *Elector) IsLeader() bool { return e.State().Role == RoleLeader }

// Term is the fencing term while leading, 0 otherwise.
func (e *Elector) Term() int64 { return e.State().Term }

// State is the current state.
func (e *Elector) State() State {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.state
}

// Subscribe returns a channel that holds the current state at once, then every change. The
// channel has capacity 1 and only ever holds the latest state: a reader that falls behind gets
// the newest state, never a backlog. It is closed when Run returns.
func (e *Elector) Subscribe() <-chan State {
	ch := make(chan State, 1)
	e.mu.Lock()
	defer e.mu.Unlock()
	ch <- e.state
	if e.closed {
		close(ch)
	} else {
		e.subs = append(e.subs, ch)
	}
	return ch
}

// publish makes s the current state if it says something new, and hands it to every
// subscriber in place of any state the subscriber has not read yet.
func (e *Elector) publish(s State) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || s.same(e.state) {
		return
	}
	e.state = s
	for _, ch := range e.subs {
		// Only publish sends, under mu: once drained, the channel has room.
		select {
		case <-ch:
		default:
		}
		ch <- s
	}
}

// closeSubscribers closes every subscriber's channel; later subscribers get a closed channel.
func (e *Elector) closeSubscribers() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	for _, ch := range e.subs {
		close(ch)
	}
	e.subs = nil
}

func (e *Elector) wake() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// succeeded records that a watch works (a list or watch call, or an event, went through).
func (e *Elector) succeeded(which int) {
	e.hmu.Lock()
	e.health[which] = health{}
	e.hmu.Unlock()
	e.wake()
}

// failed records a failure of a watch. Before the first view is complete, a refusal that will
// not heal by itself (forbidden; the ElectionGroup resource not served) ends Run.
func (e *Elector) failed(ctx context.Context, which int, verb string, err error) {
	if ctx.Err() != nil {
		return // stopping
	}
	e.hmu.Lock()
	if e.health[which].brokenSince.IsZero() {
		e.health[which].brokenSince = time.Now()
	}
	e.health[which].lastErr = err
	e.hmu.Unlock()
	if !e.synced.Load() {
		if fatal := e.refusal(which, verb, err); fatal != nil {
			select {
			case e.fatal <- fatal:
			default:
			}
		}
	}
	e.wake()
}

// refusal is the error to end Run with, when err will not heal by retrying.
func (e *Elector) refusal(which int, verb string, err error) error {
	ns := e.cfg.Namespace
	switch {
	case apierrors.IsForbidden(err):
		return &memberError{kind: ErrForbidden, msg: fmt.Sprintf(
			"podium: forbidden to %s %s in namespace %q: %s (%s)", verb, resources[which], ns, apiMessage(err), rbacHint)}
	case which == watchGroups && apierrors.IsNotFound(err):
		return &memberError{kind: ErrNoSync, msg: fmt.Sprintf(
			"podium: the API server does not serve %s in namespace %q: %s (is podium's CustomResourceDefinition installed?)", resources[which], ns, apiMessage(err))}
	}
	return nil
}

func apiMessage(err error) string {
	var status apierrors.APIStatus
	if errors.As(err, &status) && status.Status().Message != "" {
		return status.Status().Message
	}
	return err.Error()
}

// brokenSince is since when a watch has been failing (the earlier of the two), and the last
// failure of that watch; zero when both work.
func (e *Elector) brokenSince() (time.Time, error) {
	e.hmu.Lock()
	defer e.hmu.Unlock()
	var since time.Time
	var last error
	for _, h := range e.health {
		if !h.brokenSince.IsZero() && (since.IsZero() || h.brokenSince.Before(since)) {
			since, last = h.brokenSince, h.lastErr
		}
	}
	return since, last
}

// listWatch wraps a list and a watch call so that their outcome tells the watch's health.
func (e *Elector) listWatch(which int, tweak func(*metav1.ListOptions),
	list func(context.Context, metav1.ListOptions) (runtime.Object, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error),
) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			tweak(&opts)
			obj, err := list(ctx, opts)
			if err != nil {
				e.failed(ctx, which, "list", err)
			} else {
				e.succeeded(which)
			}
			return obj, err
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			tweak(&opts)
			w, err := watchFn(ctx, opts)
			if err != nil {
				e.failed(ctx, which, "watch", err)
			} else {
				e.watchStarts[which].Add(1)
				e.succeeded(which)
			}
			return w, err
		},
	}
}

// informers builds the two informers: the pod alone (field selector on its name), and the
// namespace's ElectionGroups. No resync: every change arrives as a watch event.
func (e *Elector) informers(ctx context.Context) (pods, groups cache.SharedIndexInformer) {
	ns := e.cfg.Namespace
	byName := fields.OneTermEqualSelector("metadata.name", e.cfg.PodName).String()
	podAPI := e.cfg.Client.CoreV1().Pods(ns)
	pods = cache.NewSharedIndexInformer(e.listWatch(watchPod,
		func(o *metav1.ListOptions) { o.FieldSelector = byName },
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return podAPI.List(ctx, o) },
		podAPI.Watch,
	), &corev1.Pod{}, 0, cache.Indexers{})
	groupAPI := e.cfg.Dynamic.Resource(ElectionGroupResource).Namespace(ns)
	groups = cache.NewSharedIndexInformer(e.listWatch(watchGroups,
		func(*metav1.ListOptions) {},
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return groupAPI.List(ctx, o) },
		groupAPI.Watch,
	), &unstructured.Unstructured{}, 0, cache.Indexers{})

	for which, inf := range []cache.SharedIndexInformer{pods, groups} {
		// Set before the informer runs; fails only once it has started.
		_ = inf.SetWatchErrorHandlerWithContext(func(hctx context.Context, r *cache.Reflector, err error) {
			if ctx.Err() != nil {
				return // stopping
			}
			cache.DefaultWatchErrorHandler(hctx, r, err) // logs it
			e.failed(ctx, which, "list and watch", err)
		})
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { e.succeeded(which) },
			UpdateFunc: func(any, any) { e.succeeded(which) },
			DeleteFunc: func(any) { e.succeeded(which) },
		})
	}
	return pods, groups
}

// view reads the pod and the groups from the informers' stores.
func (e *Elector) view(pods, groups cache.SharedIndexInformer) (*corev1.Pod, map[string]groupView) {
	var pod *corev1.Pod
	if obj, ok, _ := pods.GetStore().GetByKey(e.cfg.Namespace + "/" + e.cfg.PodName); ok {
		pod, _ = obj.(*corev1.Pod)
	}
	views := make(map[string]groupView)
	for _, obj := range groups.GetStore().List() {
		if u, ok := obj.(*unstructured.Unstructured); ok {
			views[u.GetName()] = viewOf(u)
		}
	}
	return pod, views
}

// current is the state to publish now, and when it turns UNKNOWN unless a watch recovers
// first (zero: no such moment is due).
func (e *Elector) current(pods, groups cache.SharedIndexInformer, now time.Time) (State, time.Time) {
	pod, views := e.view(pods, groups)
	since, _ := e.brokenSince()
	s := stateAt(pod, views, e.synced.Load(), since, now, e.cfg.UnknownAfter)
	var due time.Time
	if !since.IsZero() && s.Role != RoleUnknown {
		due = since.Add(e.cfg.UnknownAfter)
	}
	return s, due
}

// Run follows the pod's role and calls the callbacks until ctx is done, then ends any
// leadership (cancels its context, waits for OnStartedLeading to return, calls
// OnStoppedLeading) and returns nil. It returns an error at once, before any callback, when
// the pod does not exist (ErrPodNotFound), is not a member of an ElectionGroup
// (ErrNotMember), may not be read (ErrForbidden), or the first view of the pod and the groups
// does not complete within 30 s (ErrNoSync). Run may be called once.
func (e *Elector) Run(ctx context.Context) error {
	if !e.running.CompareAndSwap(false, true) {
		return errors.New("podium: Elector.Run called more than once")
	}
	defer e.closeSubscribers()

	infCtx, stopInformers := context.WithCancel(ctx)
	var informersDone sync.WaitGroup
	defer func() {
		stopInformers()
		informersDone.Wait()
	}()
	pods, groups := e.informers(infCtx)
	for _, inf := range []cache.SharedIndexInformer{pods, groups} {
		informersDone.Add(1)
		go func() {
			defer informersDone.Done()
			inf.RunWithContext(infCtx)
		}()
	}

	if err := e.firstView(ctx, pods, groups); err != nil || ctx.Err() != nil {
		return err
	}

	var followers sync.WaitGroup
	defer followers.Wait()
	l := &leadership{callbacks: e.cfg.Callbacks, stepDownAfterUnknown: e.cfg.StepDownAfterUnknown}
	states := e.Subscribe()
	followers.Add(1)
	go func() {
		defer followers.Done()
		l.run(ctx, states)
	}()
	if onNewLeader := e.cfg.Callbacks.OnNewLeader; onNewLeader != nil {
		leaderStates := e.Subscribe()
		followers.Add(1)
		go func() {
			defer followers.Done()
			leaders(ctx, leaderStates, onNewLeader)
		}()
	}

	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		now := time.Now()
		s, due := e.current(pods, groups, now)
		e.publish(s)
		var expired <-chan time.Time
		if !due.IsZero() {
			if timer == nil {
				timer = time.NewTimer(due.Sub(now))
			} else {
				timer.Reset(due.Sub(now))
			}
			expired = timer.C
		}
		select {
		case <-ctx.Done():
			return nil
		case <-e.kick:
		case <-expired:
		}
	}
}

// firstView waits until both informers have stored their first list, then checks that the pod
// exists and is a member. It returns nil when ctx is done first.
func (e *Elector) firstView(ctx context.Context, pods, groups cache.SharedIndexInformer) error {
	deadline := time.NewTimer(syncTimeout)
	defer deadline.Stop()
	poll := time.NewTicker(syncPoll)
	defer poll.Stop()
	for {
		s, _ := e.current(pods, groups, time.Now())
		e.publish(s)
		// Complete once both lists are stored and both watches are open: a member that may
		// list but not watch is told so now, not after UnknownAfter.
		if pods.HasSynced() && groups.HasSynced() && e.watchStarts[watchPod].Load() > 0 && e.watchStarts[watchGroups].Load() > 0 {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-e.fatal:
			return err
		case <-deadline.C:
			what := resources[watchPod]
			if pods.HasSynced() && e.watchStarts[watchPod].Load() > 0 {
				what = resources[watchGroups]
			}
			last := "no answer"
			if _, err := e.brokenSince(); err != nil {
				last = err.Error()
			}
			return &memberError{kind: ErrNoSync, msg: fmt.Sprintf(
				"podium: could not start watching %s in namespace %q within %s: %s", what, e.cfg.Namespace, syncTimeout, last)}
		case <-e.kick:
		case <-poll.C:
		}
	}
	pod, views := e.view(pods, groups)
	name := e.cfg.Namespace + "/" + e.cfg.PodName
	if pod == nil {
		return &memberError{kind: ErrPodNotFound, msg: fmt.Sprintf("podium: pod %s does not exist", name)}
	}
	if !isMember(pod, views) {
		return &memberError{kind: ErrNotMember, msg: fmt.Sprintf(
			"podium: pod %s is not a member of any ElectionGroup in its namespace (it has no %s annotation and no ElectionGroup's selector selects its labels)", name, GroupAnnotation)}
	}
	e.synced.Store(true)
	return nil
}
