// Command lease-baseline is one candidate of client-go's Lease-based leader election, by
// default with the timings kube-controller-manager uses (15 s lease, 10 s renew deadline, 2 s
// retry period; -lease-duration, -renew-deadline and -retry-period change them). It prints
// "LEADING <identity> <unix-nanos>" when it starts leading and "STOPPED <identity>
// <unix-nanos>" when Run ends (a lost renewal, or SIGTERM), then exits; on SIGTERM it releases
// the Lease first (ReleaseOnCancel). With -unique, the identity gets a random suffix
// (<id>_<hex>), as kube-controller-manager's does, so that a restarted process is a new
// candidate and waits out its predecessor's Lease. Without -kubeconfig it uses the in-cluster
// configuration.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file")
	namespace := flag.String("namespace", "default", "namespace of the Lease")
	name := flag.String("lease", "baseline", "Lease name")
	id := flag.String("id", "", "candidate identity")
	leaseDuration := flag.Duration("lease-duration", 15*time.Second, "LeaseDuration")
	renewDeadline := flag.Duration("renew-deadline", 10*time.Second, "RenewDeadline")
	retryPeriod := flag.Duration("retry-period", 2*time.Second, "RetryPeriod")
	unique := flag.Bool("unique", false, "append a random suffix to the identity")
	flag.Parse()
	if *unique {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		*id = fmt.Sprintf("%s_%x", *id, b)
	}

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	client := kubernetes.NewForConfigOrDie(cfg)
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: *name, Namespace: *namespace},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: *id},
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   *leaseDuration,
		RenewDeadline:   *renewDeadline,
		RetryPeriod:     *retryPeriod,
		ReleaseOnCancel: true,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				fmt.Printf("LEADING %s %d\n", *id, time.Now().UnixNano())
				<-ctx.Done()
			},
			OnStoppedLeading: func() {
				fmt.Printf("STOPPED %s %d\n", *id, time.Now().UnixNano())
			},
		},
	})
}
