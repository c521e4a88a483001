// Command podium-sample is the sample application of config/samples: an HTTP server that
// answers every request with its pod name and the role and fencing term it currently knows,
// learnt through the podium Go client. A Service that selects podium.dev/role=leader routes
// only to the pod that answers "leader".
//
//	GET  /           {"pod":"api-7d9f-2","role":"leader","term":7,"group":"api","leader":"api-7d9f-2"}
//	GET  /readyz     200 while healthy, 503 after POST /admin/unhealthy (the readiness probe)
//	GET  /healthz    200 (the liveness probe)
//	POST /admin/unhealthy, /admin/healthy   switch what /readyz answers
//
// The /admin endpoints let a demonstration or a test make the readiness probe fail, as an
// application that loses its database would; they listen on the same port, so a real
// application would keep them off its Service. The pod is named by POD_NAME and
// POD_NAMESPACE (downward API); the API server is reached with the in-cluster configuration,
// or KUBECONFIG when set. Until the pod is a member of an ElectionGroup the role is
// "none" and the client is retried; SIGTERM stops the server.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	podium "podium.dev/clients/go"
)

// answer is the body of GET /.
type answer struct {
	Pod    string `json:"pod"`
	Role   string `json:"role"`
	Term   int64  `json:"term,omitempty"`
	Group  string `json:"group,omitempty"`
	Leader string `json:"leader,omitempty"`
}

// app holds what the handlers read.
type app struct {
	pod       string
	elector   atomic.Pointer[podium.Elector]
	unhealthy atomic.Bool
}

func main() {
	addr := flag.String("addr", ":8080", "listen address")
	flag.Parse()
	if err := run(*addr); err != nil {
		log.Fatalf("podium-sample: %v", err)
	}
}

func run(addr string) error {
	a := &app{pod: os.Getenv("POD_NAME")}
	if a.pod == "" || os.Getenv("POD_NAMESPACE") == "" {
		return podium.ErrNoIdentity
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.serveRole)
	mux.HandleFunc("GET /readyz", a.serveReady)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("POST /admin/unhealthy", a.setHealth(true))
	mux.HandleFunc("POST /admin/healthy", a.setHealth(false))
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	go a.follow(ctx)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// follow runs the podium client until ctx ends, starting it again (after a pause) when it
// stops with an error: the pod may not be a member yet, or the API server may refuse.
func (a *app) follow(ctx context.Context) {
	for ctx.Err() == nil {
		err := a.followOnce(ctx)
		if err != nil && ctx.Err() == nil {
			log.Printf("podium-sample: following the role: %v (retrying in 2s)", err)
			a.elector.Store(nil)
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		}
	}
}

func (a *app) followOnce(ctx context.Context) error {
	client, dyn, err := podium.Clients("")
	if err != nil {
		return err
	}
	el, err := podium.NewElector(podium.Config{
		Client:  client,
		Dynamic: dyn,
		Callbacks: podium.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				term, _ := podium.TermFromContext(ctx)
				log.Printf("podium-sample: leading under term %d", term)
				<-ctx.Done()
			},
			OnStoppedLeading: func() { log.Printf("podium-sample: no longer leading") },
		},
	})
	if err != nil {
		return err
	}
	a.elector.Store(el)
	return el.Run(ctx)
}

func (a *app) serveRole(w http.ResponseWriter, _ *http.Request) {
	ans := answer{Pod: a.pod, Role: "none"}
	if el := a.elector.Load(); el != nil {
		s := el.State()
		ans.Role, ans.Term, ans.Group, ans.Leader = s.Role.String(), s.Term, s.Group, s.Leader
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(ans)
}

func (a *app) serveReady(w http.ResponseWriter, _ *http.Request) {
	if a.unhealthy.Load() {
		http.Error(w, "unhealthy", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

func (a *app) setHealth(unhealthy bool) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		a.unhealthy.Store(unhealthy)
		fmt.Fprintln(w, "ok")
	}
}
