package podium

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
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

// The pause between two attempts of a list or watch call that failed for want of an answer
// (see transient): from retryMin, doubling up to retryMax.
const (
	retryMin = 250 * time.Millisecond
	retryMax = 4 * time.Second
)

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

	// lmu guards decided, ended and handoverUntil.
	lmu sync.Mutex
	// decided is closed when the leadership in progress is decided over, ended when its
	// context is about to be cancelled (later than decided only during a handover linger);
	// both nil when there is none.
	decided, ended <-chan struct{}
	// handoverUntil is when the grace of the WaitHandover waiting now ends: a stop of this
	// member has been requested. Zero when none is waiting.
	handoverUntil time.Time

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
	if cfg.UnknownAfter < 0 || cfg.StepDownAfterUnknown < 0 || cfg.HandoverLinger < 0 {
		return nil, errors.New("podium: Config.UnknownAfter, Config.StepDownAfterUnknown and Config.HandoverLinger must not be negative")
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

// WaitHandover lets a leader whose pod is stopping keep working until podium has handed its
// leadership over; call it on SIGTERM, before cancelling Run's context.
//
// In a group whose spec.handoff.mode is MakeBeforeBreak, podium promotes a successor before
// it demotes a leader whose pod is terminating (a rolling update, a drain), so that the group
// never lacks a working leader — which holds only if the old leader keeps working until it is
// demoted. In such a group, while a leadership of this pod is in progress (OnStartedLeading
// has been started for it and it has not ended), WaitHandover blocks until that leadership
// ends — the watch shows this pod a follower or gone (or leading under another term),
// RoleUnknown has lasted Config.StepDownAfterUnknown, or Run's context is done — and returns
// nil; it returns ctx.Err() if ctx is done first, and an error wrapping ErrHandoverTimeout if
// grace elapses first. It returns nil at once when no leadership is in progress (a follower,
// or before the first leadership, or after Run returned), when the group hands over
// BreakBeforeMake (there, podium demotes first: stop at once), and when grace ≤ 0.
//
// While WaitHandover waits, a stop of this member is requested: if the leadership then ends
// because the watch shows this pod demoted or gone, and the group is still MakeBeforeBreak,
// the leadership lingers for Config.HandoverLinger — its context stays un-cancelled and
// OnStoppedLeading is not called yet — and WaitHandover returns once the linger is over and
// the context cancelled. The linger covers the successor's notification latency: podium
// promoted it a few milliseconds before it demoted this pod, but its own watch may show the
// promotion later than this pod's watch shows the demotion. The whole wait, linger included,
// never exceeds grace; a demotion seen in time is not a timeout, even if grace cuts its linger
// short.
//
// RoleUnknown alone does not end the wait: unless StepDownAfterUnknown is set, a leader cut
// off from the API server waits for grace. WaitHandover writes nothing and cancels nothing;
// do not call it from OnStartedLeading, whose return it may otherwise wait for in vain.
func (e *Elector) WaitHandover(ctx context.Context, grace time.Duration) error {
	mbb := e.State().MakeBeforeBreak
	e.lmu.Lock()
	decided, ended := e.decided, e.ended
	if ended == nil || grace <= 0 || !mbb {
		e.lmu.Unlock()
		return nil
	}
	until := time.Now().Add(grace)
	e.handoverUntil = until
	e.lmu.Unlock()
	defer func() {
		e.lmu.Lock()
		if e.handoverUntil.Equal(until) {
			e.handoverUntil = time.Time{}
		}
		e.lmu.Unlock()
	}()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-ended:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
	}
	select {
	case <-decided:
		// Demoted in time, lingering: the linger ends at the grace at the latest.
		select {
		case <-ended:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	default:
		return fmt.Errorf("podium: %w: still leading %s after SIGTERM", ErrHandoverTimeout, grace)
	}
}

// handoverRequested reports whether a stop of this member has been requested (WaitHandover
// is waiting), and until when the wait may last.
func (e *Elector) handoverRequested() (time.Time, bool) {
	e.lmu.Lock()
	defer e.lmu.Unlock()
	return e.handoverUntil, !e.handoverUntil.IsZero()
}

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
//
// A call that fails for want of an answer (see transient) is retried here, after a pause that
// doubles from retryMin up to retryMax, rather than handed back to the reflector: the
// reflector would retry only after its own backoff, which grows to 30 s (jittered up to 60 s)
// during a long outage, and until a call succeeds nothing tells that the API server answers
// again — a watch resumed after an outage sends nothing while nothing changes. So the role
// comes back from RoleUnknown within retryMax of the API server's return. A call that the API
// server answered with a refusal goes back to the reflector, which knows what to do next (list
// anew after 410 Gone, say).
func (e *Elector) listWatch(which int, tweak func(*metav1.ListOptions),
	list func(context.Context, metav1.ListOptions) (runtime.Object, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error),
) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			tweak(&opts)
			return retrying(ctx, e, which, "list", func() (runtime.Object, error) { return list(ctx, opts) })
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			tweak(&opts)
			return retrying(ctx, e, which, "watch", func() (watch.Interface, error) { return watchFn(ctx, opts) })
		},
	}
}

// retrying makes a call until it succeeds, fails other than transiently, or ctx is done, and
// records each outcome in the watch's health.
func retrying[T any](ctx context.Context, e *Elector, which int, verb string, call func() (T, error)) (T, error) {
	pause := retryMin
	for {
		v, err := call()
		if err == nil {
			if verb == "watch" {
				e.watchStarts[which].Add(1)
			}
			e.succeeded(which)
			return v, nil
		}
		e.failed(ctx, which, verb, err)
		if ctx.Err() != nil || !transient(err) {
			return v, err
		}
		// Up to a fifth shorter, so that members do not all call at once after an outage.
		timer := time.NewTimer(pause - rand.N(pause/5))
		select {
		case <-ctx.Done():
			timer.Stop()
			return v, err
		case <-timer.C:
		}
		pause = min(2*pause, retryMax)
	}
}

// transient reports whether a list or watch call failed for want of an answer, so that the
// same call may succeed later: no answer at all (a network error), or the API server (or a
// proxy in front of it) overloaded, restarting or timing out. A resourceVersion too old or
// too new is not transient: the reflector must list anew.
func transient(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return true
	}
	if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) ||
		apierrors.HasStatusCause(err, metav1.CauseTypeResourceVersionTooLarge) ||
		strings.Contains(err.Error(), "Too large resource version") { // API servers before 1.18.6
		return false
	}
	switch status.Status().Code {
	case 429, 500, 502, 503, 504:
		return true
	}
	return false
}

// informers builds the two informers: the pod alone (field selector on its name), and the
// namespace's ElectionGroups. No resync: every change arrives as a watch event.
// Against an API server the reflectors start with a streaming list (a watch that sends the
// initial state, client-go's WatchListClient); a client that cannot serve one (client-go's fakes
// say so) is listed and watched as before, as client-go's own informers do.
func (e *Elector) informers(ctx context.Context) (pods, groups cache.SharedIndexInformer) {
	ns := e.cfg.Namespace
	byName := fields.OneTermEqualSelector("metadata.name", e.cfg.PodName).String()
	podAPI := e.cfg.Client.CoreV1().Pods(ns)
	pods = cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(e.listWatch(watchPod,
		func(o *metav1.ListOptions) { o.FieldSelector = byName },
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return podAPI.List(ctx, o) },
		podAPI.Watch,
	), e.cfg.Client), &corev1.Pod{}, 0, cache.Indexers{})
	groupAPI := e.cfg.Dynamic.Resource(ElectionGroupResource).Namespace(ns)
	groups = cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(e.listWatch(watchGroups,
		func(*metav1.ListOptions) {},
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return groupAPI.List(ctx, o) },
		groupAPI.Watch,
	), e.cfg.Dynamic), &unstructured.Unstructured{}, 0, cache.Indexers{})

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
	l := &leadership{callbacks: e.cfg.Callbacks, stepDownAfterUnknown: e.cfg.StepDownAfterUnknown,
		handoverLinger: e.cfg.HandoverLinger,
		handover:       e.handoverRequested,
		announce: func(decided, ended <-chan struct{}) {
			e.lmu.Lock()
			e.decided, e.ended = decided, ended
			e.lmu.Unlock()
		},
	}
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
