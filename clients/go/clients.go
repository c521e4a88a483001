package podium

import (
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Clients builds the two clients Config needs, Client and Dynamic, from a kubeconfig file;
// with kubeconfig "", from $KUBECONFIG, else from the in-cluster configuration (the pod's
// ServiceAccount).
func Clients(kubeconfig string) (kubernetes.Interface, dynamic.Interface, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	rest, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, nil, err
	}
	client, err := kubernetes.NewForConfig(rest)
	if err != nil {
		return nil, nil, err
	}
	dyn, err := dynamic.NewForConfig(rest)
	if err != nil {
		return nil, nil, err
	}
	return client, dyn, nil
}
