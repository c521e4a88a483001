package podium

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder records callbacks as strings: "started N", "done N" (OnStartedLeading returned),
// "stopped", "new_leader X". It fails the test if two OnStartedLeading calls overlap.
type recorder struct {
	t *testing.T
	// linger is how long OnStartedLeading takes to return once its context is cancelled.
	linger time.Duration

	mu     sync.Mutex
	events []string
	active int
}

func (r *recorder) add(ev string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

func (r *recorder) callbacks() LeaderCallbacks {
	return LeaderCallbacks{
		OnStartedLeading: func(ctx context.Context) {
			term, ok := TermFromContext(ctx)
			if !ok {
				r.t.Errorf("OnStartedLeading: no term in its context")
			}
			r.mu.Lock()
			r.active++
			if r.active > 1 {
				r.t.Errorf("two OnStartedLeading calls at once")
			}
			r.events = append(r.events, fmt.Sprintf("started %d", term))
			r.mu.Unlock()
			<-ctx.Done()
			time.Sleep(r.linger)
			r.mu.Lock()
			r.active--
			r.events = append(r.events, fmt.Sprintf("done %d", term))
			r.mu.Unlock()
		},
		OnStoppedLeading: func() { r.add("stopped") },
		OnNewLeader:      func(id string) { r.add("new_leader " + id) },
	}
}

func (r *recorder) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// filter keeps the events that start with prefix.
func filter(events []string, prefixes ...string) []string {
	var out []string
	for _, e := range events {
		for _, p := range prefixes {
			if strings.HasPrefix(e, p) {
				out = append(out, e)
				break
			}
		}
	}
	return out
}

// waitFor polls until cond holds, or fails the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitEvents waits until the leadership events (started, done, stopped) are want.
func waitEvents(t *testing.T, r *recorder, want ...string) {
	t.Helper()
	waitFor(t, 3*time.Second, fmt.Sprintf("events %q", want), func() bool {
		return slices.Equal(filter(r.snapshot(), "started", "done", "stopped"), want)
	})
}

// runLeadership runs a leadership tracker on a channel of states; stop ends it and waits.
func runLeadership(t *testing.T, r *recorder, stepDown time.Duration) (chan<- State, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	states := make(chan State)
	l := &leadership{callbacks: r.callbacks(), stepDownAfterUnknown: stepDown}
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.run(ctx, states)
	}()
	stop := func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return states, stop
}

func leaderAt(term int64) State {
	return State{Role: RoleLeader, Term: term, Group: "web", Leader: "web-0", At: time.Now()}
}

func followerState() State {
	return State{Role: RoleFollower, Group: "web", Leader: "web-1", At: time.Now()}
}

func unknownState() State {
	return State{Role: RoleUnknown, Group: "web", Leader: "web-0", At: time.Now()}
}

func TestLeadershipLeaderFollowerLeader(t *testing.T) {
	r := &recorder{t: t}
	states, stop := runLeadership(t, r, 0)
	states <- followerState()
	states <- leaderAt(1)
	waitEvents(t, r, "started 1")
	states <- leaderAt(1) // the same leadership: nothing happens
	states <- followerState()
	waitEvents(t, r, "started 1", "done 1", "stopped")
	states <- followerState()
	states <- leaderAt(2)
	waitEvents(t, r, "started 1", "done 1", "stopped", "started 2")
	stop()
	waitEvents(t, r, "started 1", "done 1", "stopped", "started 2", "done 2", "stopped")
}

func TestLeadershipTermChangeRestartsAfterPreviousReturns(t *testing.T) {
	r := &recorder{t: t, linger: 40 * time.Millisecond}
	states, _ := runLeadership(t, r, 0)
	states <- leaderAt(3)
	waitEvents(t, r, "started 3")
	states <- leaderAt(4)
	// The new leadership starts only once the old call has returned and OnStoppedLeading ran.
	waitEvents(t, r, "started 3", "done 3", "stopped", "started 4")
}

func TestLeadershipLeaderWithoutTermDoesNotStart(t *testing.T) {
	r := &recorder{t: t}
	states, _ := runLeadership(t, r, 0)
	states <- leaderAt(0)
	states <- leaderAt(6)
	waitEvents(t, r, "started 6")
	states <- leaderAt(0) // a leader label without a term podium wrote: another leadership
	waitEvents(t, r, "started 6", "done 6", "stopped")
}

func TestLeadershipUnknownKeepsLeadingByDefault(t *testing.T) {
	r := &recorder{t: t}
	states, _ := runLeadership(t, r, 0)
	states <- leaderAt(5)
	waitEvents(t, r, "started 5")
	states <- unknownState()
	time.Sleep(60 * time.Millisecond)
	states <- leaderAt(5)
	states <- unknownState()
	time.Sleep(20 * time.Millisecond)
	if got := filter(r.snapshot(), "started", "done", "stopped"); !slices.Equal(got, []string{"started 5"}) {
		t.Fatalf("UNKNOWN ended the leadership: %q", got)
	}
	states <- followerState()
	waitEvents(t, r, "started 5", "done 5", "stopped")
}

func TestLeadershipStepDownAfterUnknown(t *testing.T) {
	r := &recorder{t: t}
	const stepDown = 80 * time.Millisecond
	states, _ := runLeadership(t, r, stepDown)
	states <- leaderAt(5)
	waitEvents(t, r, "started 5")
	began := time.Now()
	states <- unknownState()
	// Another UNKNOWN state (the leader changed while the watch is broken) does not restart
	// the clock.
	time.Sleep(stepDown / 2)
	u := unknownState()
	u.Leader = "web-3"
	states <- u
	waitEvents(t, r, "started 5", "done 5", "stopped")
	if elapsed := time.Since(began); elapsed < stepDown || elapsed > stepDown+time.Second {
		t.Errorf("stepped down after %s, want about %s", elapsed, stepDown)
	}
	// The watch recovers and still shows this pod leading: it leads again, under the same term.
	states <- leaderAt(5)
	waitEvents(t, r, "started 5", "done 5", "stopped", "started 5")
}

func TestLeadershipRecoveryBeforeStepDown(t *testing.T) {
	r := &recorder{t: t}
	const stepDown = 60 * time.Millisecond
	states, _ := runLeadership(t, r, stepDown)
	states <- leaderAt(8)
	waitEvents(t, r, "started 8")
	states <- unknownState()
	states <- leaderAt(8)
	time.Sleep(2 * stepDown)
	if got := filter(r.snapshot(), "started", "done", "stopped"); !slices.Equal(got, []string{"started 8"}) {
		t.Fatalf("a recovered watch still stepped down: %q", got)
	}
}

func TestLeadersReportsChanges(t *testing.T) {
	states := make(chan State, 8)
	for _, l := range []string{"", "web-1", "web-1", "", "web-0", "web-0", "web-2"} {
		states <- State{Role: RoleFollower, Leader: l}
	}
	close(states)
	var got []string
	leaders(context.Background(), states, func(id string) { got = append(got, id) })
	if want := []string{"web-1", "web-0", "web-2"}; !slices.Equal(got, want) {
		t.Errorf("OnNewLeader calls %q, want %q", got, want)
	}
}

func TestLeadershipStepDownWhenUnknownSeenLate(t *testing.T) {
	r := &recorder{t: t}
	states, _ := runLeadership(t, r, time.Hour)
	states <- leaderAt(9)
	waitEvents(t, r, "started 9")
	// The tracker sees an UNKNOWN state that began longer ago than StepDownAfterUnknown (it
	// was busy): it steps down at once.
	u := unknownState()
	u.At = time.Now().Add(-2 * time.Hour)
	states <- u
	waitEvents(t, r, "started 9", "done 9", "stopped")
}

// lingering runs a leadership tracker with a handover linger and a stop requested (until the
// far future) in a make-before-break group.
func lingering(t *testing.T, r *recorder, linger time.Duration) chan<- State {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	states := make(chan State)
	l := &leadership{callbacks: r.callbacks(), handoverLinger: linger,
		handover: func() (time.Time, bool) { return time.Now().Add(time.Hour), true }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.run(ctx, states)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return states
}

func mbb(s State) State {
	s.MakeBeforeBreak = true
	return s
}

func TestLeadershipLingerOtherStatesKeepLingering(t *testing.T) {
	r := &recorder{t: t}
	states := lingering(t, r, 300*time.Millisecond)
	states <- mbb(leaderAt(3))
	waitEvents(t, r, "started 3")
	began := time.Now()
	states <- mbb(followerState())
	time.Sleep(100 * time.Millisecond)
	states <- unknownState()            // another state during the linger: still lingering
	states <- State{Role: RoleFollower} // the pod gone
	time.Sleep(50 * time.Millisecond)
	if got := filter(r.snapshot(), "started", "done", "stopped"); !slices.Equal(got, []string{"started 3"}) {
		t.Fatalf("events %q during the linger", got)
	}
	waitEvents(t, r, "started 3", "done 3", "stopped")
	if elapsed := time.Since(began); elapsed < 250*time.Millisecond {
		t.Errorf("the linger lasted %s, want 300ms", elapsed)
	}
}

func TestLeadershipLingerCutByNewTerm(t *testing.T) {
	r := &recorder{t: t}
	states := lingering(t, r, 5*time.Second)
	states <- mbb(leaderAt(3))
	waitEvents(t, r, "started 3")
	states <- mbb(followerState())
	time.Sleep(50 * time.Millisecond)
	states <- mbb(leaderAt(4))
	waitEvents(t, r, "started 3", "done 3", "stopped", "started 4")
}

func TestLeadershipNoLingerBreakBeforeMake(t *testing.T) {
	r := &recorder{t: t}
	states := lingering(t, r, 5*time.Second)
	states <- leaderAt(3)
	waitEvents(t, r, "started 3")
	states <- followerState()
	waitEvents(t, r, "started 3", "done 3", "stopped")
}
