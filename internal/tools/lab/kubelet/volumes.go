package kubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The lab has no mount namespaces. A pod's configMap, secret and emptyDir
// volumes are directories under <lab>/pods/<uid>/volumes/<name>, filled as
// the kubelet projects them (one file per key, or per item), and a path
// under a volumeMount's mountPath in a container's args or environment is
// rewritten to the volume's directory.

// volumeDir is where volume name of the pod lives on the machine.
func (p *pod) volumeDir(name string) string {
	return filepath.Join(p.dir(), "volumes", name)
}

// dir is the pod's directory under the lab's.
func (p *pod) dir() string {
	return filepath.Join(p.k.lab.Dir, "pods", string(p.latest.Load().UID))
}

// writeVolumes fills the pod's volumes; other volume types are skipped
// with a warning.
func (p *pod) writeVolumes(ctx context.Context, obj *corev1.Pod) error {
	for _, v := range obj.Spec.Volumes {
		files, err := p.volumeFiles(ctx, obj.Namespace, v)
		if err != nil {
			return fmt.Errorf("volume %s: %w", v.Name, err)
		}
		if files == nil {
			p.k.logf("pod %s: warning: volume %s: only configMap, secret and emptyDir volumes are supported in the lab", p.name(), v.Name)
			continue
		}
		dir := p.volumeDir(v.Name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		for path, data := range files {
			if err := writeVolumeFile(dir, path, data); err != nil {
				return fmt.Errorf("volume %s: %w", v.Name, err)
			}
		}
	}
	return nil
}

// volumeFiles returns the files of volume v by path, or nil if the lab does
// not support its type.
func (p *pod) volumeFiles(ctx context.Context, namespace string, v corev1.Volume) (map[string][]byte, error) {
	switch {
	case v.EmptyDir != nil:
		return map[string][]byte{}, nil
	case v.ConfigMap != nil:
		cm, err := p.k.client.CoreV1().ConfigMaps(namespace).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		data := map[string][]byte{}
		for k, s := range cm.Data {
			data[k] = []byte(s)
		}
		for k, b := range cm.BinaryData {
			data[k] = b
		}
		return project(data, v.ConfigMap.Items)
	case v.Secret != nil:
		s, err := p.k.client.CoreV1().Secrets(namespace).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return project(s.Data, v.Secret.Items)
	}
	return nil, nil
}

// project maps keys to file paths: every key to its own name, or only the
// listed items to their paths.
func project(data map[string][]byte, items []corev1.KeyToPath) (map[string][]byte, error) {
	if len(items) == 0 {
		return data, nil
	}
	files := map[string][]byte{}
	for _, it := range items {
		b, ok := data[it.Key]
		if !ok {
			return nil, fmt.Errorf("no key %q", it.Key)
		}
		files[it.Path] = b
	}
	return files, nil
}

// writeVolumeFile writes one file, refusing paths that leave dir.
func writeVolumeFile(dir, path string, data []byte) error {
	full := filepath.Join(dir, path)
	if !strings.HasPrefix(full, dir+string(filepath.Separator)) {
		return fmt.Errorf("path %q leaves the volume", path)
	}
	if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
		return err
	}
	return os.WriteFile(full, data, 0o600)
}

// hostPath maps a path as container c sees it to the machine: under one of
// c's volumeMounts it goes to the volume's directory; anything else is
// returned as is.
func (p *pod) hostPath(c corev1.Container, s string) string {
	for _, m := range c.VolumeMounts {
		mount := strings.TrimSuffix(m.MountPath, "/")
		if s == mount || strings.HasPrefix(s, mount+"/") {
			return p.volumeDir(m.Name) + strings.TrimPrefix(s, mount)
		}
	}
	return s
}
