// Checks the admission policy's CEL without a cluster: compiles every expression of
// config/admission/admission_policy.yaml in the Kubernetes CEL environment (k8s.io/apiserver's,
// at the compatibility version of Kubernetes 1.30, the oldest with the policy API, and at this
// module's default) and evaluates the policy on sample requests: its match conditions, then its
// variables in order, then its validations and their messages.
//
// What it does not reproduce: the API server declares object, oldObject and params with the
// resources' schemas, where this check declares them dyn (the policy reads templates through
// dyn() for that reason), and evaluates variables lazily. The e2e test (e2e/admission.rs) runs
// the policy in an API server.
//
//	go run . ../admission_policy.yaml
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	admv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/apiserver/pkg/cel/environment"
	"sigs.k8s.io/yaml"
)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

type policy struct {
	spec  admv1.ValidatingAdmissionPolicySpec
	progs map[string]cel.Program
}

func load(path string, compat *version.Version) *policy {
	raw := string(must(os.ReadFile(path)))
	var vap admv1.ValidatingAdmissionPolicy
	for _, doc := range strings.Split(raw, "\n---\n") {
		if strings.Contains(doc, "kind: ValidatingAdmissionPolicy\n") {
			must(0, yaml.UnmarshalStrict([]byte(doc), &vap))
		}
	}
	if len(vap.Spec.Validations) == 0 {
		fmt.Printf("%s: no ValidatingAdmissionPolicy with validations\n", path)
		os.Exit(1)
	}
	base := environment.MustBaseEnvSet(compat)
	es := must(base.Extend(environment.VersionedOptions{
		IntroducedVersion: version.MajorMinor(1, 0),
		EnvOptions: []cel.EnvOption{
			cel.Variable("object", cel.DynType),
			cel.Variable("oldObject", cel.DynType),
			cel.Variable("request", cel.DynType),
			cel.Variable("params", cel.DynType),
			cel.Variable("variables", cel.MapType(cel.StringType, cel.DynType)),
		},
	}))
	env := es.NewExpressionsEnv()
	p := &policy{spec: vap.Spec, progs: map[string]cel.Program{}}
	add := func(expr string) {
		ast, iss := env.Compile(expr)
		if iss.Err() != nil {
			fmt.Printf("COMPILE ERROR in %q:\n%v\n", expr, iss.Err())
			os.Exit(1)
		}
		p.progs[expr] = must(env.Program(ast))
	}
	for _, m := range vap.Spec.MatchConditions {
		add(m.Expression)
	}
	for _, v := range vap.Spec.Variables {
		add(v.Expression)
	}
	for _, v := range vap.Spec.Validations {
		add(v.Expression)
		add(v.MessageExpression)
	}
	return p
}

// eval returns "" when allowed, else the message.
func (p *policy) eval(user, kind string, object, oldObject, params any) (string, error) {
	vars := map[string]any{}
	act := map[string]any{
		"object": object, "oldObject": oldObject, "params": params,
		"request":   map[string]any{"kind": map[string]any{"kind": kind}, "userInfo": map[string]any{"username": user}},
		"variables": vars,
	}
	for _, m := range p.spec.MatchConditions {
		out, _, err := p.progs[m.Expression].Eval(act)
		if err != nil {
			return "", fmt.Errorf("matchCondition %s: %w", m.Name, err)
		}
		if out != types.True {
			return "", nil
		}
	}
	for _, v := range p.spec.Variables {
		out, _, err := p.progs[v.Expression].Eval(act)
		if err != nil {
			return "", fmt.Errorf("variable %s: %w", v.Name, err)
		}
		vars[v.Name] = out
	}
	for _, v := range p.spec.Validations {
		out, _, err := p.progs[v.Expression].Eval(act)
		if err != nil {
			return "", fmt.Errorf("validation %s: %w", v.Expression, err)
		}
		if out != types.True {
			msg, _, err := p.progs[v.MessageExpression].Eval(act)
			if err != nil {
				return "", fmt.Errorf("messageExpression: %w", err)
			}
			return msg.Value().(string), nil
		}
	}
	return "", nil
}

type obj = map[string]any

func pod(labels, annotations obj) obj {
	meta := obj{"name": "p"}
	if labels != nil {
		meta["labels"] = labels
	}
	if annotations != nil {
		meta["annotations"] = annotations
	}
	return obj{"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": obj{}}
}

func tmpl(kind string, labels, annotations obj, noMeta bool) obj {
	t := obj{"spec": obj{}}
	if !noMeta {
		t["metadata"] = pod(labels, annotations)["metadata"]
	}
	if kind == "CronJob" {
		return obj{"kind": kind, "metadata": obj{"name": "c"}, "spec": obj{"schedule": "* * * * *", "jobTemplate": obj{"spec": obj{"template": t}}}}
	}
	return obj{"kind": kind, "metadata": obj{"name": "d"}, "spec": obj{"template": t}}
}

func main() {
	const sa = "system:serviceaccount:podium-system:podium"
	const admin = "kubernetes-admin"
	failed := 0
	for _, compat := range []*version.Version{version.MajorMinor(1, 30), environment.DefaultCompatibilityVersion()} {
		p := load(os.Args[1], compat)
		params := obj{"data": obj{"keys": ""}}
		custom := obj{"data": obj{"keys": " example.com/role ,, podium.dev/role"}}
		noData := obj{"metadata": obj{"name": "x"}}
		role := obj{"podium.dev/role": "leader"}
		follower := obj{"podium.dev/role": "follower", "app": "a"}
		type tc struct {
			name        string
			user, kind  string
			object, old any
			params      any
			deny        string // substring of the message; "" = allowed
		}
		cases := []tc{
			{"pod create, no metadata labels", admin, "Pod", pod(nil, nil), nil, params, ""},
			{"pod create, other labels", admin, "Pod", pod(obj{"app": "a"}, obj{"x": "y"}), nil, params, ""},
			{"pod create with role", admin, "Pod", pod(role, nil), nil, params, "label podium.dev/role is podium's role label: only " + sa + " may add, change or remove it on a pod"},
			{"pod create with role, follower", admin, "Pod", pod(obj{"podium.dev/role": "follower"}, nil), nil, params, "label podium.dev/role"},
			{"pod create with term", admin, "Pod", pod(nil, obj{"podium.dev/term": "3"}), nil, params, "annotation podium.dev/term is podium's"},
			{"pod create with group", admin, "Pod", pod(nil, obj{"podium.dev/group": "g"}), nil, params, "annotation podium.dev/group"},
			{"pod create with role by podium", sa, "Pod", pod(role, obj{"podium.dev/term": "3"}), nil, params, ""},
			{"pod label flip", admin, "Pod", pod(role, nil), pod(follower, nil), params, "label podium.dev/role"},
			{"pod label removed", admin, "Pod", pod(obj{"app": "a"}, nil), pod(follower, nil), params, "label podium.dev/role"},
			{"pod all labels removed", admin, "Pod", pod(nil, nil), pod(follower, nil), params, "label podium.dev/role"},
			{"pod label added", admin, "Pod", pod(follower, nil), pod(obj{"app": "a"}, nil), params, "label podium.dev/role"},
			{"pod other label changed, role kept", admin, "Pod", pod(obj{"podium.dev/role": "follower", "app": "b"}, obj{"podium.dev/term": "2"}), pod(follower, obj{"podium.dev/term": "2"}), params, ""},
			{"pod status update, nothing changed", "system:node:n1", "Pod", pod(follower, nil), pod(follower, nil), params, ""},
			{"pod update, no labels at all", admin, "Pod", pod(nil, nil), pod(nil, nil), params, ""},
			{"pod term changed", admin, "Pod", pod(role, obj{"podium.dev/term": "4"}), pod(role, obj{"podium.dev/term": "3"}), params, "annotation podium.dev/term"},
			{"pod term removed", admin, "Pod", pod(role, obj{}), pod(role, obj{"podium.dev/term": "3"}), params, "annotation podium.dev/term"},
			{"pod flip by podium", sa, "Pod", pod(role, nil), pod(follower, nil), params, ""},
			{"custom key create", admin, "Pod", pod(obj{"example.com/role": "leader"}, nil), nil, custom, "label example.com/role"},
			{"custom key not listed", admin, "Pod", pod(obj{"example.com/role": "leader"}, nil), nil, params, ""},
			{"params without data", admin, "Pod", pod(role, nil), nil, noData, "label podium.dev/role"},
			{"params without data, plain pod", admin, "Pod", pod(obj{"a": "b"}, nil), nil, noData, ""},
			{"deployment create with role", admin, "Deployment", tmpl("Deployment", role, nil, false), nil, params, "label podium.dev/role is podium's role label: only " + sa + " may add, change or remove it on the pod template of a Deployment"},
			{"deployment create plain", admin, "Deployment", tmpl("Deployment", obj{"app": "a"}, nil, false), nil, params, ""},
			{"deployment template without metadata", admin, "Deployment", tmpl("Deployment", nil, nil, true), nil, params, ""},
			{"deployment scaled, keys kept", admin, "Deployment", tmpl("Deployment", role, nil, false), tmpl("Deployment", role, nil, false), params, ""},
			{"deployment template gains term", admin, "Deployment", tmpl("Deployment", nil, obj{"podium.dev/term": "1"}, false), tmpl("Deployment", nil, nil, false), params, "annotation podium.dev/term"},
			{"statefulset with role", admin, "StatefulSet", tmpl("StatefulSet", role, nil, false), nil, params, "StatefulSet"},
			{"replicaset with role", admin, "ReplicaSet", tmpl("ReplicaSet", role, nil, false), nil, params, "ReplicaSet"},
			{"daemonset with role", admin, "DaemonSet", tmpl("DaemonSet", role, nil, false), nil, params, "DaemonSet"},
			{"job with group", admin, "Job", tmpl("Job", nil, obj{"podium.dev/group": "g"}, false), nil, params, "Job"},
			{"cronjob with role", admin, "CronJob", tmpl("CronJob", role, nil, false), nil, params, "pod template of a CronJob"},
			{"cronjob plain", admin, "CronJob", tmpl("CronJob", obj{"a": "b"}, nil, false), nil, params, ""},
			{"cronjob no template metadata", admin, "CronJob", tmpl("CronJob", nil, nil, true), nil, params, ""},
			{"cronjob no jobTemplate spec", admin, "CronJob", obj{"kind": "CronJob", "spec": obj{"jobTemplate": obj{}}}, nil, params, ""},
			{"rs controller creates plain pod", "system:serviceaccount:kube-system:replicaset-controller", "Pod", pod(obj{"app": "a", "pod-template-hash": "x"}, nil), nil, params, ""},
		}
		for _, c := range cases {
			msg, err := p.eval(c.user, c.kind, c.object, c.old, c.params)
			ok := err == nil && ((c.deny == "" && msg == "") || (c.deny != "" && strings.Contains(msg, c.deny)))
			if !ok {
				failed++
				fmt.Printf("FAIL (CEL %s) %s: want %q, got %q (error: %v)\n", compat, c.name, c.deny, msg, err)
			}
		}
		fmt.Printf("CEL %s: %d cases\n", compat, len(cases))
	}
	if failed > 0 {
		fmt.Printf("%d failed\n", failed)
		os.Exit(1)
	}
}
