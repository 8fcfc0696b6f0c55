package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// current returns the cached object called name; when the cache has none
// it creates want (created is then true). When that finds the object
// exists already — the cache is behind, or an object of that name lost
// the managed-by label and is adopted — it reads it from the apiserver.
func current[T any](ctx context.Context, kind, ns, name string, want T,
	cached func(string) (T, error),
	create func(context.Context, T) (T, error),
	get func(context.Context, string, metav1.GetOptions) (T, error),
) (cur T, created bool, err error) {
	cur, err = cached(name)
	if err == nil {
		return cur, false, nil
	}
	if !apierrors.IsNotFound(err) {
		return cur, false, fmt.Errorf("get %s %s/%s from cache: %w", kind, ns, name, err)
	}
	cur, err = create(ctx, want)
	if err == nil {
		return cur, true, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return cur, false, fmt.Errorf("create %s %s/%s: %w", kind, ns, name, err)
	}
	cur, err = get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return cur, false, fmt.Errorf("get %s %s/%s: %w", kind, ns, name, err)
	}
	return cur, false, nil
}

func (c *Controller) ensureServiceAccount(ctx context.Context, ns string) error {
	want := c.tmpl.desiredServiceAccount(ns)
	api := c.client.CoreV1().ServiceAccounts(ns)
	cur, created, err := current(ctx, "serviceaccount", ns, want.Name, want,
		c.serviceAccounts.ServiceAccounts(ns).Get,
		func(ctx context.Context, o *corev1.ServiceAccount) (*corev1.ServiceAccount, error) {
			return api.Create(ctx, o, metav1.CreateOptions{})
		}, api.Get)
	if err != nil || created {
		c.logCreated(err, created, ns, "serviceaccount", want.Name)
		return err
	}
	drift := labelsDrift(cur.Labels, want.Labels)
	if drift == "" && !ptr.Equal(cur.AutomountServiceAccountToken, want.AutomountServiceAccountToken) {
		drift = "automountServiceAccountToken"
	}
	if drift == "" {
		return nil
	}
	upd := cur.DeepCopy()
	upd.Labels = mergeLabels(upd.Labels, want.Labels)
	upd.AutomountServiceAccountToken = want.AutomountServiceAccountToken
	if _, err := api.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update serviceaccount %s/%s: %w", ns, want.Name, err)
	}
	c.logRepaired(ns, "serviceaccount", want.Name, drift)
	return nil
}

// ensureService creates or repairs the edge's Service and returns its node
// port. A new Service asks for remembered (the port the pull Secret
// names, 0 for none) and takes an allocated one when that is taken.
func (c *Controller) ensureService(ctx context.Context, ns string, remembered int32) (int32, error) {
	want := c.tmpl.desiredService(ns, remembered)
	api := c.client.CoreV1().Services(ns)
	cur, created, err := current(ctx, "service", ns, want.Name, want,
		c.services.Services(ns).Get,
		func(ctx context.Context, o *corev1.Service) (*corev1.Service, error) {
			return c.writeService(ctx, o, func(ctx context.Context, o *corev1.Service) (*corev1.Service, error) {
				return api.Create(ctx, o, metav1.CreateOptions{})
			})
		}, api.Get)
	c.logCreated(err, created, ns, "service", want.Name)
	if err != nil {
		return 0, err
	}
	if !created {
		if drift := serviceDrift(cur, want); drift != "" {
			upd := cur.DeepCopy()
			port := nodePortOf(cur)
			if port == 0 {
				port = remembered
			}
			applyService(upd, c.tmpl.desiredService(ns, port))
			cur, err = c.writeService(ctx, upd, func(ctx context.Context, o *corev1.Service) (*corev1.Service, error) {
				return api.Update(ctx, o, metav1.UpdateOptions{})
			})
			if err != nil {
				return 0, fmt.Errorf("update service %s/%s: %w", ns, want.Name, err)
			}
			c.logRepaired(ns, "service", want.Name, drift)
		}
	}
	port := nodePortOf(cur)
	if port == 0 {
		return 0, fmt.Errorf("service %s/%s has no node port", ns, want.Name)
	}
	return port, nil
}

// errNodePortBusy: the remembered node port is allocated; the sync is
// retried until the grace period ends.
var errNodePortBusy = errors.New("remembered node port is allocated; asking again")

// writeService writes svc with the node port it asks for and, when the
// apiserver refuses that port (outside the node port range, or still
// allocated after the grace period: another Service has it), again with
// one the apiserver allocates.
func (c *Controller) writeService(ctx context.Context, svc *corev1.Service, write func(context.Context, *corev1.Service) (*corev1.Service, error)) (*corev1.Service, error) {
	asked := nodePortOf(svc)
	out, err := write(ctx, svc)
	if err == nil || asked == 0 || !isNodePortInvalid(err) {
		if err == nil {
			c.portFree(svc.Namespace)
		}
		return out, err
	}
	if strings.Contains(err.Error(), "already allocated") && c.portBusyWithinGrace(svc.Namespace) {
		return nil, fmt.Errorf("service %s/%s node port %d: %w", svc.Namespace, svc.Name, asked, errNodePortBusy)
	}
	c.portFree(svc.Namespace)
	c.log.Warn("edge node port unavailable; allocating another", "namespace", svc.Namespace, "service", svc.Name,
		"node_port", asked, "err", err)
	retry := svc.DeepCopy()
	retry.Spec.Ports[0].NodePort = 0
	out, err = write(ctx, retry)
	if err != nil {
		return out, err
	}
	c.log.Warn("edge node port changed; the pull secret follows", "namespace", svc.Namespace, "service", svc.Name,
		"old_node_port", asked, "node_port", nodePortOf(out))
	c.event(out, corev1.EventTypeWarning, "NodePortChanged",
		"node port %d is unavailable; the edge moved to %d (pods pull from %s)", asked, nodePortOf(out), EdgeHost(nodePortOf(out)))
	return out, nil
}

// portBusyWithinGrace records the first refusal of ns's remembered node
// port and reports whether the grace period since then still runs.
func (c *Controller) portBusyWithinGrace(ns string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	first, ok := c.portBusySince[ns]
	if !ok {
		first = time.Now()
		c.portBusySince[ns] = first
	}
	return time.Since(first) < c.nodePortGrace
}

func (c *Controller) portFree(ns string) {
	c.mu.Lock()
	delete(c.portBusySince, ns)
	c.mu.Unlock()
}

// isNodePortInvalid reports the apiserver's refusal of a requested node
// port ("provided port is already allocated", "provided port is not in
// the valid range").
func isNodePortInvalid(err error) bool {
	st, ok := err.(apierrors.APIStatus)
	if !ok || !apierrors.IsInvalid(err) || st.Status().Details == nil {
		return false
	}
	for _, cause := range st.Status().Details.Causes {
		if cause.Field == "spec.ports[0].nodePort" {
			return true
		}
	}
	return false
}

func nodePortOf(s *corev1.Service) int32 {
	if len(s.Spec.Ports) != 1 {
		return 0
	}
	return s.Spec.Ports[0].NodePort
}

// serviceDrift names the first owned field of cur that differs from want
// ("" for none). The node port is the Service's own: any is fine.
func serviceDrift(cur, want *corev1.Service) string {
	if d := labelsDrift(cur.Labels, want.Labels); d != "" {
		return d
	}
	switch {
	case cur.Spec.Type != want.Spec.Type:
		return "spec.type"
	case !maps.Equal(cur.Spec.Selector, want.Spec.Selector):
		return "spec.selector"
	case cur.Spec.ExternalTrafficPolicy != want.Spec.ExternalTrafficPolicy:
		return "spec.externalTrafficPolicy"
	case len(cur.Spec.Ports) != 1:
		return "spec.ports"
	}
	p, w := cur.Spec.Ports[0], want.Spec.Ports[0]
	if p.Name != w.Name || p.Protocol != w.Protocol || p.Port != w.Port || p.TargetPort != w.TargetPort {
		return "spec.ports[0]"
	}
	if p.NodePort == 0 {
		return "spec.ports[0].nodePort"
	}
	return ""
}

func applyService(upd, want *corev1.Service) {
	upd.Labels = mergeLabels(upd.Labels, want.Labels)
	upd.Spec.Type = want.Spec.Type
	upd.Spec.Selector = want.Spec.Selector
	upd.Spec.ExternalTrafficPolicy = want.Spec.ExternalTrafficPolicy
	upd.Spec.Ports = want.Spec.Ports
}

// ensureSecret creates or repairs the pull Secret for the edge's node
// port. cur is the cached Secret (nil for none): its token is kept when it
// parses; otherwise a new one is generated and that is logged.
func (c *Controller) ensureSecret(ctx context.Context, ns string, cur *corev1.Secret, nodePort int32) error {
	api := c.client.CoreV1().Secrets(ns)
	host := EdgeHost(nodePort)
	if cur == nil {
		token, err := NewPullToken()
		if err != nil {
			return err
		}
		want := c.tmpl.desiredSecret(ns, host, token)
		if _, err = api.Create(ctx, want, metav1.CreateOptions{}); err == nil {
			c.logCreated(nil, true, ns, "secret", want.Name, "host", host)
			return nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create secret %s/%s: %w", ns, want.Name, err)
		}
		if cur, err = api.Get(ctx, want.Name, metav1.GetOptions{}); err != nil {
			return fmt.Errorf("get secret %s/%s: %w", ns, want.Name, err)
		}
	}
	token, err := c.keptToken(cur)
	if err != nil {
		return err
	}
	want := c.tmpl.desiredSecret(ns, host, token)
	if cur.Type != want.Type {
		// The type is immutable: replace the Secret.
		if err := api.Delete(ctx, cur.Name, deleteOptions(cur.UID)); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete secret %s/%s of type %s: %w", ns, cur.Name, cur.Type, err)
		}
		if _, err := api.Create(ctx, want, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create secret %s/%s: %w", ns, want.Name, err)
		}
		c.logRepaired(ns, "secret", want.Name, "type")
		return nil
	}
	drift := labelsDrift(cur.Labels, want.Labels)
	if drift == "" && !bytes.Equal(cur.Data[corev1.DockerConfigJsonKey], want.Data[corev1.DockerConfigJsonKey]) {
		drift = "data[" + corev1.DockerConfigJsonKey + "]"
	}
	if drift == "" {
		return nil
	}
	upd := cur.DeepCopy()
	upd.Labels = mergeLabels(upd.Labels, want.Labels)
	if upd.Data == nil {
		upd.Data = map[string][]byte{}
	}
	upd.Data[corev1.DockerConfigJsonKey] = want.Data[corev1.DockerConfigJsonKey]
	if _, err := api.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update secret %s/%s: %w", ns, want.Name, err)
	}
	c.logRepaired(ns, "secret", want.Name, drift, "host", host)
	return nil
}

// keptToken is s's token when s parses, else a new one (logged, with the
// field that did not parse; never the content).
func (c *Controller) keptToken(s *corev1.Secret) (string, error) {
	_, token, perr := ParsePullSecret(s)
	if perr == nil {
		return token, nil
	}
	token, err := NewPullToken()
	if err != nil {
		return "", err
	}
	c.log.Warn("pull secret unreadable; generating a new pull token", "namespace", s.Namespace, "secret", s.Name, "err", perr)
	c.event(s, corev1.EventTypeWarning, "PullSecretRegenerated", "pull secret unreadable (%v); a new pull token was generated", perr)
	return token, nil
}

// rememberedNodePort is the node port a pull Secret names, even when the
// rest of it is damaged; 0 for none.
func rememberedNodePort(s *corev1.Secret) int32 {
	if s == nil {
		return 0
	}
	var cfg dockerConfig
	if json.Unmarshal(s.Data[corev1.DockerConfigJsonKey], &cfg) != nil || len(cfg.Auths) != 1 {
		return 0
	}
	for host := range cfg.Auths {
		if p, ok := NodePortOf(host); ok {
			return p
		}
	}
	return 0
}

// labelsDrift names the first label of want that have lacks or holds with
// another value ("" for none). Other labels are not the controller's.
func labelsDrift(have, want map[string]string) string {
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if v, ok := have[k]; !ok || v != want[k] {
			return "metadata.labels[" + k + "]"
		}
	}
	return ""
}

// mergeLabels is have with want's labels set.
func mergeLabels(have, want map[string]string) map[string]string {
	out := maps.Clone(have)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, want)
	return out
}

func (c *Controller) logCreated(err error, created bool, ns, kind, name string, args ...any) {
	if err == nil && created {
		c.log.Info("created edge object", append([]any{"namespace", ns, "kind", kind, "name", name}, args...)...)
	}
}

func (c *Controller) logRepaired(ns, kind, name, field string, args ...any) {
	c.log.Info("repaired edge object", append([]any{"namespace", ns, "kind", kind, "name", name, "field", field}, args...)...)
}
