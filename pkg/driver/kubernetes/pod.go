package kubernetes

import (
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/guest"
)

// PodName is the pod of one run of a sandbox: a new name per run, so a
// start never waits for the previous run's pod to finish terminating.
func PodName(sandboxID, instanceID string) string { return "sb-" + sandboxID + "-" + instanceID }

// Where a pod of an image without a supervisor gets one
// (Config.SupervisorImage).
const (
	// binVolume is the emptyDir the init container copies the supervisor
	// into; the sandbox container mounts it read-only at
	// guest.SupervisorBinDir.
	binVolume = "sandkey-bin"
	// InstallContainerName is the init container that copies it there.
	InstallContainerName = "sandkey-install"
)

// podFor is the pod of one run.
func (d *Driver) podFor(spec driver.Spec) *corev1.Pod {
	pod := d.basePod(spec)
	if d.cfg.SupervisorImage != "" {
		d.addSupervisor(pod, spec)
	}
	return pod
}

// addSupervisor gives the pod of an image without a supervisor one: an
// init container from the supervisor image copies it into an emptyDir
// (`supervisor --copy-to`: that image has no shell), which the sandbox
// container mounts read-only and runs as `supervisor -- <command>`.
func (d *Driver) addSupervisor(pod *corev1.Pod, spec driver.Spec) {
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
		Name: binVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}},
	})
	pod.Spec.InitContainers = []corev1.Container{{
		Name:            InstallContainerName,
		Image:           d.cfg.SupervisorImage,
		ImagePullPolicy: d.cfg.PullPolicy,
		Command:         []string{guest.BakedSupervisor, "--copy-to", guest.SupervisorPath},
		VolumeMounts:    []corev1.VolumeMount{{Name: binVolume, MountPath: guest.SupervisorBinDir}},
	}}
	c := &pod.Spec.Containers[0]
	c.Command = append([]string{guest.SupervisorPath, "--"}, spec.Command...)
	c.Args = nil
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: binVolume, MountPath: guest.SupervisorBinDir, ReadOnly: true})
}

// basePod is the pod of one run of an image with the supervisor as its
// entrypoint.
func (d *Driver) basePod(spec driver.Spec) *corev1.Pod {
	expiry := d.cfg.ExpirationSeconds
	mode := int32(0o400)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      PodName(spec.SandboxID, spec.InstanceID),
			Namespace: d.cfg.Namespace,
			Labels: map[string]string{
				LabelManagedBy:  ManagedBy,
				LabelSandboxID:  spec.SandboxID,
				LabelInstanceID: spec.InstanceID,
			},
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: d.cfg.ServiceAccount,
			// The sandboxes' ServiceAccount has no API access, and the
			// API token would be one more credential inside the sandbox.
			AutomountServiceAccountToken: new(false),
			EnableServiceLinks:           new(false),
			RestartPolicy:                corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name:            ContainerName,
				Image:           spec.Image,
				ImagePullPolicy: d.cfg.PullPolicy,
				// The image's entrypoint is `/supervisor --`.
				Args: spec.Command,
				Env:  d.envFor(spec),
				VolumeMounts: []corev1.VolumeMount{{
					Name: tokenVolume, MountPath: guest.ServiceAccountTokenDir, ReadOnly: true,
				}},
			}},
			Volumes: []corev1.Volume{{
				Name: tokenVolume,
				VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
					DefaultMode: &mode,
					Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
						Audience: d.cfg.Audience, ExpirationSeconds: &expiry, Path: guest.ServiceAccountTokenFile,
					}}},
				}},
			}},
		},
	}
}

// envFor is the container's environment: the user's, less SANDKEY_*, and
// the gateway's SANDKEY_* variables with this driver's auth mode,
// token directory and gateway address.
func (d *Driver) envFor(spec driver.Spec) []corev1.EnvVar {
	sandbox := make(map[string]string, len(spec.SandboxEnv)+4)
	for k, v := range spec.SandboxEnv {
		sandbox[k] = v
	}
	sandbox[guest.EnvAuthMode] = guest.ModeK8sSA
	sandbox[guest.EnvTokenDir] = guest.ServiceAccountTokenDir
	sandbox[guest.EnvGateway] = d.cfg.Gateway
	if len(d.cfg.GatewayCA) > 0 {
		sandbox[guest.EnvGatewayCA] = string(d.cfg.GatewayCA)
	}
	kv := driver.Environ(spec.Env, sandbox)
	sort.Strings(kv)
	env := make([]corev1.EnvVar, 0, len(kv))
	for _, e := range kv {
		k, v, _ := strings.Cut(e, "=")
		env = append(env, corev1.EnvVar{Name: k, Value: v})
	}
	return env
}
