// Package kubernetes is the kubernetes driver: one Pod per sandbox run,
// authenticated by its projected ServiceAccount token (DESIGN.md §8.1).
//
// A run is a Pod named sb-<sandbox id>-<instance id> in the driver's
// namespace, labelled with the sandbox and instance ids. The supervisor is
// its entrypoint (an image FROM sandkey-base); the sandbox's command is the
// container's args. With Config.SupervisorImage any image is a sandbox:
// an init container from that image copies the supervisor (supervisor
// --copy-to) into an emptyDir the sandbox container mounts read-only at
// /run/sandkey/bin and runs as `supervisor -- <command>`; the command is
// then required, as the driver reads no image configuration. The Pod runs as the sandboxes' ServiceAccount, which
// has no RBAC at all, never mounts the API token
// (automountServiceAccountToken: false), and gets one projected volume at
// /run/sandkey/k8s-sa: a ServiceAccount token for the gateway's audience,
// bound to the Pod, that the kubelet rotates with the same ..data swap as
// sandkey's own token directories. No sandkey token is ever written into a
// Pod: the supervisor exchanges the projected token for one over the
// gateway's shared TLS listener and keeps it in memory.
//
// The exchange's checks run here (VerifyCredential), in order, each with
// its own refusal reason: TokenReview with the gateway's audience says
// authenticated and echoes the audience; the user is the sandboxes'
// ServiceAccount; the token names exactly one pod and one pod UID; the
// live Pod of that name exists, is not being deleted, and has that UID.
// The last check matters: the API server keeps answering authenticated for
// about 10 s after a pod is deleted (its TokenReview success cache). The
// gateway then accepts the UID only if it is the run it recorded at start.
//
// State comes from an informer on the driver's labelled pods; a sandbox
// without a pod is stopped (a pod deleted behind the gateway's back
// included), since the driver creates nothing before Start. Stop deletes
// the pod with the operator's grace and waits for it to go. Logs streams
// the pod log API's log of the newest pod's sandbox container.
package kubernetes
