package podium

import (
	"context"
	"time"
)

// leadership turns a sequence of states into OnStartedLeading / OnStoppedLeading calls.
//
// A leadership under term T starts when a state shows RoleLeader with T ≥ 1 and ends when a
// state shows RoleFollower, RoleLeader with another term (a new leadership then starts), or
// when RoleUnknown has lasted stepDownAfterUnknown (if > 0). Ending it cancels the
// OnStartedLeading context, waits for that call to return, then calls OnStoppedLeading.
type leadership struct {
	callbacks            LeaderCallbacks
	stepDownAfterUnknown time.Duration

	// term is the term being led; 0 when not leading.
	term   int64
	cancel context.CancelFunc
	done   chan struct{}
	// unknownSince is when the current run of RoleUnknown began; zero when the state is known.
	unknownSince time.Time
}

// run follows states until ctx is done, then ends any leadership and returns.
func (l *leadership) run(ctx context.Context, states <-chan State) {
	var timer *time.Timer
	var expired <-chan time.Time
	stopTimer := func() {
		if timer != nil {
			timer.Stop()
			timer, expired = nil, nil
		}
	}
	defer stopTimer()
	for {
		select {
		case <-ctx.Done():
			l.stop()
			return
		case s, ok := <-states:
			if !ok {
				l.stop()
				return
			}
			stopTimer()
			if wait, armed := l.apply(ctx, s, time.Now()); armed {
				timer = time.NewTimer(wait)
				expired = timer.C
			}
		case <-expired:
			timer, expired = nil, nil
			l.stop()
		}
	}
}

// apply acts on one state seen at now. While an UNKNOWN leadership must end unless another
// state arrives first, it returns how long is left before stepping down.
func (l *leadership) apply(ctx context.Context, s State, now time.Time) (time.Duration, bool) {
	if s.Role == RoleUnknown {
		if l.unknownSince.IsZero() {
			l.unknownSince = s.At
			if l.unknownSince.IsZero() {
				l.unknownSince = now
			}
		}
	} else {
		l.unknownSince = time.Time{}
	}
	if l.term != 0 {
		switch s.Role {
		case RoleFollower:
			l.stop()
		case RoleLeader:
			if s.Term != l.term {
				l.stop()
			}
		case RoleUnknown:
			if l.stepDownAfterUnknown > 0 {
				// Already due if the tracker sees this state late: the timer fires at once.
				return l.stepDownAfterUnknown - now.Sub(l.unknownSince), true
			}
		}
	}
	if l.term == 0 && s.Role == RoleLeader && s.Term >= 1 && ctx.Err() == nil {
		l.start(ctx, s.Term)
	}
	return 0, false
}

// termKey is the context key under which OnStartedLeading's context holds its term.
type termKey struct{}

// TermFromContext returns the term of the leadership that an OnStartedLeading context belongs
// to. Unlike Elector.Term, which follows the latest state, it is fixed for the whole call:
// fence the work done under this context with it.
func TermFromContext(ctx context.Context) (int64, bool) {
	t, ok := ctx.Value(termKey{}).(int64)
	return t, ok
}

// start begins a leadership under term.
func (l *leadership) start(ctx context.Context, term int64) {
	leadCtx, cancel := context.WithCancel(context.WithValue(ctx, termKey{}, term))
	done := make(chan struct{})
	l.term, l.cancel, l.done = term, cancel, done
	started := l.callbacks.OnStartedLeading
	go func() {
		defer close(done)
		if started != nil {
			started(leadCtx)
		}
	}()
}

// stop ends the current leadership, if any: cancel, wait for OnStartedLeading to return, then
// OnStoppedLeading.
func (l *leadership) stop() {
	if l.term == 0 {
		return
	}
	l.cancel()
	<-l.done
	l.term, l.cancel, l.done = 0, nil, nil
	if l.callbacks.OnStoppedLeading != nil {
		l.callbacks.OnStoppedLeading()
	}
}

// leaders calls onNewLeader, in order, each time the leader that states show changes to
// another non-empty name. It returns when states is closed or ctx is done.
func leaders(ctx context.Context, states <-chan State, onNewLeader func(string)) {
	reported := ""
	for {
		select {
		case <-ctx.Done():
			return
		case s, ok := <-states:
			if !ok {
				return
			}
			if s.Leader != "" && s.Leader != reported {
				reported = s.Leader
				onNewLeader(s.Leader)
			}
		}
	}
}
