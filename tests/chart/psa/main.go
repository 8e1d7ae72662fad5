// Test harness only: evaluates pod specs against a Pod Security Standards level with the Kubernetes
// pod-security-admission library (the code the API server's PodSecurity admission runs).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"
)

type verdict struct {
	Allowed bool     `json:"allowed"`
	Reasons []string `json:"reasons"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: psa LEVEL < podtemplate.yaml (privileged, baseline or restricted)")
		os.Exit(2)
	}
	level, err := api.ParseLevel(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var template corev1.PodTemplateSpec
	if err := yaml.UnmarshalStrict(raw, &template); err != nil {
		fmt.Fprintln(os.Stderr, "pod template:", err)
		os.Exit(2)
	}
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	out := verdict{Allowed: true, Reasons: []string{}}
	for _, result := range evaluator.EvaluatePod(api.LevelVersion{Level: level, Version: api.LatestVersion()}, &template.ObjectMeta, &template.Spec) {
		if !result.Allowed {
			out.Allowed = false
			out.Reasons = append(out.Reasons, result.ForbiddenReason+" ("+result.ForbiddenDetail+")")
		}
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}
