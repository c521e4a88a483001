// Command check verifies podium's monitoring kit against the metrics podium exports: the
// Grafana dashboard is valid JSON, every panel has a query, and every query of the dashboard
// and every alert of the rule files parses as PromQL and uses only metric names podium exports,
// with their label names (and the labels a scrape adds).
//
// The exported metrics are read from the Rust source that registers them (the file holding
// `Registry::with_prefix`, found anywhere under -src): each `registry.register("name", …, var)`
// with var's type (Counter: name_total; Histogram: name_bucket/_sum/_count; Gauge: name) and,
// for a Family, the fields of its label struct.
//
//	go run ./check -src ../../.. -dashboard ../podium-dashboard.json -rules ../podium-alerts.rules.yaml
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// Labels a scrape adds to every series (Prometheus' own, and prometheus-operator's
// ServiceMonitor/PodMonitor target labels).
var scrapeLabels = []string{"instance", "job", "namespace", "pod", "service", "endpoint", "container"}

type metric struct {
	name   string   // as registered, without the prefix
	kind   string   // counter, histogram, gauge
	labels []string // label names of a Family
}

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	src := flag.String("src", ".", "directory searched for the Rust source that registers the metrics")
	var dashboards, rules list
	flag.Var(&dashboards, "dashboard", "Grafana dashboard JSON to check (repeatable)")
	flag.Var(&rules, "rules", "Prometheus rule file to check (repeatable)")
	flag.Parse()

	exported, err := exportedMetrics(*src)
	if err != nil {
		fail(err)
	}
	var problems []string
	for _, d := range dashboards {
		n, p := checkDashboard(d, exported)
		problems = append(problems, p...)
		fmt.Printf("%s: %d queries\n", d, n)
	}
	for _, r := range rules {
		n, p := checkRules(r, exported)
		problems = append(problems, p...)
		fmt.Printf("%s: %d rules\n", r, n)
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(os.Stderr, p)
		}
		fail(fmt.Errorf("%d problem(s)", len(problems)))
	}
	fmt.Printf("ok: only the %d series names podium exports are used\n", len(exported))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "monitoring check:", err)
	os.Exit(1)
}

var (
	prefixRe   = regexp.MustCompile(`Registry::with_prefix\(\s*"([a-z_]+)"\s*\)`)
	registerRe = regexp.MustCompile(`(?s)registry\.register\(\s*"([a-z_]+)",\s*"(?:[^"\\]|\\.)*",\s*([a-z_]+)\.clone\(\)`)
	structRe   = regexp.MustCompile(`(?s)#\[derive\([^)]*EncodeLabelSet[^)]*\)\]\s*(?:pub\s+)?struct\s+(\w+)\s*\{([^}]*)\}`)
	fieldRe    = regexp.MustCompile(`(?m)^\s*(?:pub\s+)?(\w+)\s*:`)
	familyRe   = regexp.MustCompile(`Family::<\s*(\w+)\s*,`)
)

// exportedMetrics maps every series name podium exports to the label names it may carry.
func exportedMetrics(root string) (map[string][]string, error) {
	var file, text string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "target" || d.Name() == ".git" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".rs") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if prefixRe.Match(b) {
			if file != "" {
				return fmt.Errorf("metrics registered in both %s and %s", file, path)
			}
			file, text = path, string(b)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if file == "" {
		return nil, errors.New("no Rust file under " + root + " registers metrics (Registry::with_prefix)")
	}
	prefix := prefixRe.FindStringSubmatch(text)[1]
	structs := map[string][]string{}
	for _, m := range structRe.FindAllStringSubmatch(text, -1) {
		for _, f := range fieldRe.FindAllStringSubmatch(m[2], -1) {
			structs[m[1]] = append(structs[m[1]], f[1])
		}
	}
	var metrics []metric
	for _, m := range registerRe.FindAllStringSubmatch(text, -1) {
		decl := regexp.MustCompile(`(?s)let\s+` + m[2] + `\s*(?::[^=]+)?=\s*([^;]+);`).FindStringSubmatch(text)
		if decl == nil {
			return nil, fmt.Errorf("%s: cannot find the declaration of %s (metric %s)", file, m[2], m[1])
		}
		met := metric{name: m[1]}
		switch {
		case strings.Contains(decl[1], "Histogram"):
			met.kind = "histogram"
		case strings.Contains(decl[1], "Counter"):
			met.kind = "counter"
		case strings.Contains(decl[1], "Gauge"):
			met.kind = "gauge"
		default:
			return nil, fmt.Errorf("%s: metric %s is of an unknown type: %s", file, m[1], decl[1])
		}
		if f := familyRe.FindStringSubmatch(decl[1]); f != nil {
			labels, ok := structs[f[1]]
			if !ok {
				return nil, fmt.Errorf("%s: label struct %s of metric %s not found", file, f[1], m[1])
			}
			met.labels = labels
		}
		metrics = append(metrics, met)
	}
	if len(metrics) == 0 {
		return nil, fmt.Errorf("%s: no registry.register calls found", file)
	}
	exported := map[string][]string{}
	for _, m := range metrics {
		base := prefix + "_" + m.name
		switch m.kind {
		case "counter":
			exported[base+"_total"] = m.labels
		case "gauge":
			exported[base] = m.labels
		case "histogram":
			exported[base+"_bucket"] = append(slices.Clone(m.labels), "le")
			exported[base+"_sum"] = m.labels
			exported[base+"_count"] = m.labels
		}
	}
	names := make([]string, 0, len(exported))
	for n := range exported {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Printf("%s exports: %s\n", file, strings.Join(names, " "))
	return exported, nil
}

// checkDashboard checks every panel's queries; rows hold no queries themselves.
func checkDashboard(path string, exported map[string][]string) (int, []string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, []string{err.Error()}
	}
	var dash struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		return 0, []string{fmt.Sprintf("%s: not valid JSON: %v", path, err)}
	}
	if len(dash.Panels) == 0 {
		return 0, []string{path + ": no panels"}
	}
	var problems []string
	n := 0
	var walk func([]json.RawMessage)
	walk = func(panels []json.RawMessage) {
		for _, raw := range panels {
			var p struct {
				Title   string            `json:"title"`
				Type    string            `json:"type"`
				Panels  []json.RawMessage `json:"panels"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			}
			if err := json.Unmarshal(raw, &p); err != nil {
				problems = append(problems, fmt.Sprintf("%s: a panel: %v", path, err))
				continue
			}
			if p.Type == "row" || p.Type == "text" {
				walk(p.Panels)
				continue
			}
			if len(p.Targets) == 0 {
				problems = append(problems, fmt.Sprintf("%s: panel %q has no query", path, p.Title))
			}
			for _, t := range p.Targets {
				n++
				for _, q := range checkExpr(t.Expr, exported) {
					problems = append(problems, fmt.Sprintf("%s: panel %q: %s", path, p.Title, q))
				}
			}
		}
	}
	walk(dash.Panels)
	return n, problems
}

func checkRules(path string, exported map[string][]string) (int, []string) {
	groups, errs := rulefmt.ParseFile(path, false, model.UTF8Validation, parser.NewParser(parser.Options{}), nil)
	var problems []string
	for _, e := range errs {
		problems = append(problems, fmt.Sprintf("%s: %v", path, e))
	}
	if groups == nil {
		return 0, problems
	}
	n := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			n++
			name := r.Alert + r.Record
			for _, q := range checkExpr(r.Expr, exported) {
				problems = append(problems, fmt.Sprintf("%s: rule %s: %s", path, name, q))
			}
		}
	}
	return n, problems
}

// checkExpr parses one query and checks its metric names and the label names it uses.
func checkExpr(expr string, exported map[string][]string) []string {
	if strings.TrimSpace(expr) == "" {
		return []string{"empty query"}
	}
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return []string{fmt.Sprintf("%q does not parse: %v", expr, err)}
	}
	// Any label podium exports on any metric, for grouping and vector matching.
	anyLabel := map[string]bool{}
	for _, l := range scrapeLabels {
		anyLabel[l] = true
	}
	for _, ls := range exported {
		for _, l := range ls {
			anyLabel[l] = true
		}
	}
	var problems []string
	groupingLabels := func(what string, labels []string) {
		for _, l := range labels {
			if !anyLabel[l] {
				problems = append(problems, fmt.Sprintf("%s label %q is on no podium metric", what, l))
			}
		}
	}
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			name := n.Name
			for _, m := range n.LabelMatchers {
				if m.Name == "__name__" {
					name = m.Value
				}
			}
			labels, ok := exported[name]
			if !ok {
				problems = append(problems, fmt.Sprintf("metric %q is not exported by podium", name))
				return nil
			}
			for _, m := range n.LabelMatchers {
				if m.Name != "__name__" && !slices.Contains(labels, m.Name) && !slices.Contains(scrapeLabels, m.Name) {
					problems = append(problems, fmt.Sprintf("%s has no label %q (it has %v)", name, m.Name, labels))
				}
			}
		case *parser.AggregateExpr:
			groupingLabels("grouping", n.Grouping)
		case *parser.BinaryExpr:
			if n.VectorMatching != nil {
				groupingLabels("matching", n.VectorMatching.MatchingLabels)
				groupingLabels("group_left/right", n.VectorMatching.Include)
			}
		}
		return nil
	})
	return problems
}
