// Command podium-member-go follows the role of the pod it runs in with the podium Go client
// and prints one JSON line on stdout per callback:
//
//	{"event":"started","term":7,"at":"2026-11-22T03:00:00.123456789Z"}
//	{"event":"stopped","at":"..."}
//	{"event":"new_leader","leader":"api-7d9f-2","at":"..."}
//
// The pod is named by POD_NAME and POD_NAMESPACE; the API server is reached through
// KUBECONFIG (or -kubeconfig), else the in-cluster configuration. It exits non-zero, with the
// error on stderr, when the client cannot follow the pod's role, and 0 on SIGTERM or SIGINT.
//
// On SIGTERM or SIGINT while leading a group whose spec.handoff.mode is MakeBeforeBreak, it
// keeps leading until podium has promoted a successor and demoted this pod (or the pod is
// gone), at most -grace (default 10s), and only then stops: the "stopped" line comes after the
// handover, so the group never lacks a working leader (Elector.WaitHandover). After the
// demotion it keeps leading -handover-linger longer (default 250ms, within -grace), so that
// the successor's "started" — its watch may show its promotion a few milliseconds after this
// pod's watch shows the demotion — comes before this pod's "stopped" (Config.HandoverLinger).
// A second signal stops at once. In a BreakBeforeMake group (the default), and when not leading, it stops at
// once.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	podium "podium.dev/clients/go"
)

// event is one line of output.
type event struct {
	Event  string `json:"event"`
	Term   int64  `json:"term,omitempty"`
	Leader string `json:"leader,omitempty"`
	At     string `json:"at"`
}

// printer writes whole lines to stdout, one at a time; stdout is not buffered, so each line
// is out as soon as it is written.
type printer struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (p *printer) print(e event) {
	e.At = time.Now().UTC().Format(time.RFC3339Nano)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.enc.Encode(e); err != nil {
		fmt.Fprintln(os.Stderr, "podium-member-go: writing stdout:", err)
	}
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, else the in-cluster configuration)")
	unknownAfter := flag.Duration("unknown-after", podium.DefaultUnknownAfter, "how long a watch may keep failing before the role is unknown")
	stepDown := flag.Duration("step-down-after-unknown", 0, "end leadership once the role has been unknown this long (0: never)")
	grace := flag.Duration("grace", 10*time.Second, "on SIGTERM or SIGINT while leading a MakeBeforeBreak group, how long to keep leading while waiting to be demoted")
	linger := flag.Duration("handover-linger", podium.DefaultHandoverLinger, "on SIGTERM or SIGINT in a MakeBeforeBreak group, how long to keep leading after the demotion, so the successor learns of its promotion first (within -grace; 0: none)")
	flag.Parse()
	if err := run(*kubeconfig, *unknownAfter, *stepDown, *grace, *linger); err != nil {
		fmt.Fprintln(os.Stderr, "podium-member-go:", err)
		os.Exit(1)
	}
}

func run(kubeconfig string, unknownAfter, stepDown, grace, linger time.Duration) error {
	if os.Getenv("POD_NAME") == "" || os.Getenv("POD_NAMESPACE") == "" {
		return fmt.Errorf("podium: %w", podium.ErrNoIdentity)
	}
	client, dyn, err := podium.Clients(kubeconfig)
	if err != nil {
		return err
	}

	out := &printer{enc: json.NewEncoder(os.Stdout)}
	el, err := podium.NewElector(podium.Config{
		Client:               client,
		Dynamic:              dyn,
		UnknownAfter:         unknownAfter,
		StepDownAfterUnknown: stepDown,
		HandoverLinger:       linger,
		Callbacks: podium.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				term, _ := podium.TermFromContext(ctx)
				out.print(event{Event: "started", Term: term})
				<-ctx.Done()
			},
			OnStoppedLeading: func() { out.print(event{Event: "stopped"}) },
			OnNewLeader:      func(leader string) { out.print(event{Event: "new_leader", Leader: leader}) },
		},
	})
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	go func() {
		select {
		case <-sigs:
		case <-ctx.Done():
			return
		}
		// Keep leading until the handover and its linger (make-before-break only); a second
		// signal stops at once.
		waitCtx, stopWaiting := context.WithCancel(ctx)
		go func() {
			select {
			case <-sigs:
				stopWaiting()
			case <-waitCtx.Done():
			}
		}()
		if err := el.WaitHandover(waitCtx, grace); errors.Is(err, podium.ErrHandoverTimeout) {
			fmt.Fprintln(os.Stderr, "podium-member-go:", err)
		}
		stopWaiting()
		cancel()
	}()
	return el.Run(ctx)
}
