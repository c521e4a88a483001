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
//
// The handover linger: when a state shows RoleFollower (demoted, or the pod gone) while a stop
// of this member has been requested (handover reports it) in a make-before-break group, the
// leadership is decided over at once but its context is cancelled only handoverLinger later
// (never past the end of the request's grace): the successor, promoted just before, may see
// its promotion a few milliseconds after this member sees its demotion, and the group should
// not be without a member that believes it leads meanwhile. A leader under another term, or
// the end of run, cuts the linger short.
type leadership struct {
	callbacks            LeaderCallbacks
	stepDownAfterUnknown time.Duration
	// handoverLinger is how long a leadership ended by a requested make-before-break handover
	// keeps its context (0: not at all).
	handoverLinger time.Duration
	// handover, if set, reports whether a stop of this member has been requested (a
	// WaitHandover is waiting) and until when that wait may last.
	handover func() (until time.Time, requested bool)
	// announce, if set, is told of each leadership as it starts, with a channel closed as soon
	// as it is decided over (decided) and one closed just before its context is cancelled
	// (ended) — the same moment unless it lingers —, and as it ends (nil, nil).
	announce func(decided, ended <-chan struct{})

	// term is the term being led; 0 when not leading.
	term   int64
	cancel context.CancelFunc
	done   chan struct{}
	// decided is closed once the leadership is decided over; ended once its context is
	// about to be cancelled.
	decided, ended chan struct{}
	// lingerUntil is when a leadership decided over by a handover is cancelled; zero when it
	// is not lingering.
	lingerUntil time.Time
	// makeBeforeBreak is the handoff mode of the pod's group, as last seen.
	makeBeforeBreak bool
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
			// Stepping down after RoleUnknown, or the end of a handover linger.
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
	if s.Group != "" {
		l.makeBeforeBreak = s.MakeBeforeBreak
	}
	if l.term != 0 && !l.lingerUntil.IsZero() {
		// Decided over, lingering: only a leadership under another term ends it early.
		if left := l.lingerUntil.Sub(now); left > 0 && (s.Role != RoleLeader || s.Term < 1 || s.Term == l.term) {
			return left, true
		}
		l.stop()
	}
	if l.term != 0 {
		switch s.Role {
		case RoleFollower:
			if linger := l.lingerFor(now); linger > 0 {
				l.lingerUntil = now.Add(linger)
				close(l.decided)
				return linger, true
			}
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
	l.decided, l.ended = make(chan struct{}), make(chan struct{})
	if l.announce != nil {
		l.announce(l.decided, l.ended)
	}
	started := l.callbacks.OnStartedLeading
	go func() {
		defer close(done)
		if started != nil {
			started(leadCtx)
		}
	}()
}

// lingerFor is how long a leadership that a demotion seen at now ends keeps its context: the
// handover linger if a stop was requested in a make-before-break group, cut to the end of the
// request's grace; 0 otherwise.
func (l *leadership) lingerFor(now time.Time) time.Duration {
	if l.handoverLinger <= 0 || l.handover == nil || !l.makeBeforeBreak {
		return 0
	}
	until, requested := l.handover()
	if !requested {
		return 0
	}
	return min(l.handoverLinger, until.Sub(now))
}

// stop ends the current leadership, if any, lingering or not: cancel, wait for
// OnStartedLeading to return, then OnStoppedLeading.
func (l *leadership) stop() {
	if l.term == 0 {
		return
	}
	if l.lingerUntil.IsZero() {
		close(l.decided)
	}
	close(l.ended)
	if l.announce != nil {
		l.announce(nil, nil)
	}
	l.cancel()
	<-l.done
	l.term, l.cancel, l.done, l.decided, l.ended, l.lingerUntil = 0, nil, nil, nil, nil, time.Time{}
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
