package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/kube-proxy/config/v1alpha1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Load reads a KubeProxyConfiguration file (YAML or JSON) strictly: a wrong
// apiVersion or kind, an unknown or duplicated field, or a value of the wrong
// type is an error naming the field. (kube-proxy falls back to lenient
// decoding with a log line; svcproxy refuses, so a typo cannot hide.) The
// result is not defaulted.
func Load(path string) (*v1alpha1.KubeProxyConfiguration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	cfg, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	return cfg, nil
}

// Decode is Load for bytes already read.
func Decode(data []byte) (*v1alpha1.KubeProxyConfiguration, error) {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, err
	}
	if err := checkTypeMeta(js); err != nil {
		return nil, err
	}
	cfg := &v1alpha1.KubeProxyConfiguration{}
	strict, err := kjson.UnmarshalStrict(js, cfg, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return nil, err
	}
	return cfg, errors.Join(strict...)
}

// checkTypeMeta insists on kubeproxy.config.k8s.io/v1alpha1
// KubeProxyConfiguration before the body is decoded.
func checkTypeMeta(js []byte) error {
	var tm metav1.TypeMeta
	if err := json.Unmarshal(js, &tm); err != nil {
		return fmt.Errorf("not a KubeProxyConfiguration object: %w", err)
	}
	want := v1alpha1.SchemeGroupVersion.String()
	var errs field.ErrorList
	if tm.APIVersion != want {
		errs = append(errs, field.NotSupported(field.NewPath("apiVersion"), tm.APIVersion, []string{want}))
	}
	if tm.Kind != "KubeProxyConfiguration" {
		errs = append(errs, field.NotSupported(field.NewPath("kind"), tm.Kind, []string{"KubeProxyConfiguration"}))
	}
	return joinFieldErrors(errs)
}

// joinFieldErrors joins field errors one per line, or returns nil.
func joinFieldErrors(errs field.ErrorList) error {
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	return errors.Join(out...)
}

// WriteFile writes cfg as YAML, for --write-config-to.
func WriteFile(path string, cfg *v1alpha1.KubeProxyConfiguration) error {
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	return os.WriteFile(path, data, 0o644)
}
