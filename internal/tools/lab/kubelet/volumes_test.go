package kubelet

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestVolumes: configMap items, secrets and emptyDirs become directories of
// the pod, paths under their mounts are rewritten, and a missing key or
// a path leaving the volume is refused.
func TestVolumes(t *testing.T) {
	k, client := newKubelet(t)
	k.lab.Dir = t.TempDir()
	ctx := context.Background()
	client.CoreV1().ConfigMaps("kube-system").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: "kube-system"},
		Data:       map[string]string{"Corefile": ".:53 {}", "other": "not projected"},
	}, metav1.CreateOptions{})
	client.CoreV1().Secrets("kube-system").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "kc", Namespace: "kube-system"},
		Data:       map[string][]byte{"kubeconfig": []byte("apiVersion: v1")},
	}, metav1.CreateOptions{})
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "dns", Namespace: "kube-system", UID: "uid-1"},
		Spec: corev1.PodSpec{Volumes: []corev1.Volume{
			{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "coredns"},
				Items:                []corev1.KeyToPath{{Key: "Corefile", Path: "conf/Corefile"}},
			}}},
			{Name: "kc", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "kc"}}},
			{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/etc"}}},
		}},
	}
	p := newPod(k, obj)
	if err := p.writeVolumes(ctx, obj); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(k.lab.Dir, "pods", "uid-1", "volumes")
	for path, want := range map[string]string{"config/conf/Corefile": ".:53 {}", "kc/kubeconfig": "apiVersion: v1"} {
		if got, err := os.ReadFile(filepath.Join(root, path)); err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", path, got, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "config", "other")); !os.IsNotExist(err) {
		t.Errorf("an unlisted key was projected: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(root, "scratch")); err != nil || !fi.IsDir() {
		t.Errorf("emptyDir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "host")); !os.IsNotExist(err) {
		t.Errorf("a hostPath volume was made: %v", err)
	}

	c := corev1.Container{VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/coredns/"}, {Name: "kc", MountPath: "/etc/kc"}}}
	for in, want := range map[string]string{
		"/etc/coredns/conf/Corefile": filepath.Join(root, "config", "conf", "Corefile"),
		"/etc/kc":                    filepath.Join(root, "kc"),
		"/etc/kcx/file":              "/etc/kcx/file", // not under the mount
		"-conf":                      "-conf",
	} {
		if got := p.hostPath(c, in); got != want {
			t.Errorf("hostPath(%q) = %q, want %q", in, got, want)
		}
	}

	bad := obj.DeepCopy()
	bad.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: "coredns"},
		Items:                []corev1.KeyToPath{{Key: "missing", Path: "x"}},
	}}}}
	if err := p.writeVolumes(ctx, bad); err == nil || !strings.Contains(err.Error(), `volume v: no key "missing"`) {
		t.Errorf("missing key: %v", err)
	}
	bad.Spec.Volumes[0].ConfigMap.Items = []corev1.KeyToPath{{Key: "Corefile", Path: "../../escape"}}
	if err := p.writeVolumes(ctx, bad); err == nil || !strings.Contains(err.Error(), "leaves the volume") {
		t.Errorf("escaping path: %v", err)
	}
}
