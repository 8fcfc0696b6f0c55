package clusterview

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"google.golang.org/protobuf/encoding/prototext"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/configstore"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/controller"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

const releaseNS = "selfhost-system"

// TestKubeTenantCredentials runs the controller and the view on a real
// kube-apiserver as a ServiceAccount holding exactly controller.PolicyRules
// (and the EndpointSlices the view reads): a tenant's own Secret
// selfhost-upstream-credentials reaches its namespace's EdgeConfig and no
// other namespace's; a malformed one gets a Warning event naming the field
// and the namespace goes on with the operator's credentials.
func TestKubeTenantCredentials(t *testing.T) {
	t.Parallel()
	k := harness.StartKube(t)
	ctx := t.Context()
	admin := k.Client
	client := viewClient(t, k)
	logs := &testkit.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs)
		}
	})

	op := func(user string) *selfhostv1.Credentials {
		return &selfhostv1.Credentials{Username: user, Password: user + "-password"}
	}
	st := &config.State{Upstreams: []*selfhostv1.Upstream{
		{Prefix: "dockerhub", Url: "https://registry-1.docker.io", Hosts: []string{"docker.io", "index.docker.io"}, Credentials: op("operator-hub")},
		{Prefix: "ghcr", Url: "https://ghcr.io", Credentials: op("operator-ghcr")},
		{Prefix: "quay", Url: "https://quay.io"},
	}, Namespaces: map[string]*config.Namespace{}}
	s, err := configstore.New(st, memSource{st}, snapshot.Builder{}, log)
	if err != nil {
		t.Fatal(err)
	}
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	t.Cleanup(b.Shutdown)
	inf := controller.NewInformers(client, 0)
	var view *View
	ctl, err := controller.New(client, inf, controller.EdgeTemplate{
		Image: "registry.example/edge:v1", ControlPlaneAddress: "selfhost-controlplane.selfhost-system.svc:9090", TokenAudience: "a",
	}, log, controller.WithEventRecorder(b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: kubecontract.ManagedByValue})),
		controller.WithOnEdgeChange(func(string) {
			if view != nil {
				view.Changed("")
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	slicesF := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = discoveryv1.LabelServiceName + "=" + kubecontract.EdgeName
	}))
	view, err = New(Options{ConfigStore: s, Edges: ctl, EndpointSlices: slicesF.Discovery().V1().EndpointSlices(), Logger: log, Debounce: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{}, 2)
	inf.Start(runCtx.Done())
	slicesF.Start(runCtx.Done())
	go func() { _ = ctl.Run(runCtx); done <- struct{}{} }()
	go func() { _ = view.Run(runCtx); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		<-done
		<-done
		inf.Shutdown()
		slicesF.Shutdown()
	})

	for _, ns := range []string{"team-a", "team-b"} {
		if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
			Labels: map[string]string{kubecontract.OptInLabel: kubecontract.OptInValue}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "both namespaces configured", func(set *snapshot.Set) bool { return strings.Join(set.NamespaceNames(), ",") == "team-a,team-b" }, s)

	// team-a's own credentials for Docker Hub (under Docker's own key) and
	// quay; a registry no upstream serves.
	const tenantPassword = "team-a-hub-password"
	body := `{"auths":{` +
		`"https://index.docker.io/v1/":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("team-a-hub:"+tenantPassword)) + `"},` +
		`"quay.io":{"username":"team-a-quay","password":"team-a-quay-password"},` +
		`"registry.example.com":{"username":"x","password":"y"}}}`
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: kubecontract.UpstreamCredentialsSecretName}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(body)}}
	if sec, err = admin.CoreV1().Secrets("team-a").Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const withOwn = "dockerhub=team-a-hub,ghcr=operator-ghcr,quay=team-a-quay"
	const operators = "dockerhub=operator-hub,ghcr=operator-ghcr,quay="
	waitFor(t, "team-a's own credentials", func(set *snapshot.Set) bool { return users(set, "team-a") == withOwn }, s)
	set := s.Current()
	if got := users(set, "team-b"); got != operators {
		t.Fatalf("team-b: %s, want %s", got, operators)
	}
	b2, _ := set.Namespace("team-b")
	if strings.Contains(prototext.Format(b2.Config), tenantPassword) || strings.Contains(prototext.Format(b2.Config), "team-a-quay") {
		t.Fatal("team-b's configuration carries team-a's credentials")
	}
	for _, u := range set.Upstreams {
		if strings.HasPrefix(u.GetCredentials().GetUsername(), "team-a") {
			t.Fatalf("the global upstream list carries team-a's credentials: %s", u.GetPrefix())
		}
	}

	// Malformed: a Warning event on the Secret naming the field, never a
	// value; team-a goes on with the operator's credentials.
	sec.Data[corev1.DockerConfigJsonKey] = []byte(`{"auths":{"quay.io":{"username":"team-a-quay"}}}`)
	if _, err := admin.CoreV1().Secrets("team-a").Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "team-a back on the operator's credentials", func(set *snapshot.Set) bool { return users(set, "team-a") == operators }, s)
	var ev corev1.Event
	testkit.WaitFor(t, "a Warning event on the malformed Secret", time.Minute, func() error {
		l, err := admin.CoreV1().Events("team-a").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, e := range l.Items {
			if e.Reason == controller.EventBadUpstreamCredentials && e.InvolvedObject.Name == kubecontract.UpstreamCredentialsSecretName {
				ev = e
				return nil
			}
		}
		return fmt.Errorf("%d events, none %s on the Secret", len(l.Items), controller.EventBadUpstreamCredentials)
	})
	if ev.Type != corev1.EventTypeWarning || !strings.Contains(ev.Message, `auths["quay.io"].username, password: both needed`) {
		t.Errorf("event %s: %s", ev.Type, ev.Message)
	}
	if strings.Contains(ev.Message, "team-a-quay") {
		t.Errorf("the event shows a value: %s", ev.Message)
	}
}

// users renders namespace ns's upstreams as "prefix=user", in order.
func users(set *snapshot.Set, ns string) string {
	n, ok := set.Namespace(ns)
	if !ok {
		return ""
	}
	var out []string
	for _, u := range n.Config.GetUpstreams() {
		out = append(out, u.GetPrefix()+"="+u.GetCredentials().GetUsername())
	}
	return strings.Join(out, ",")
}

// viewClient is a ServiceAccount's client bound to exactly
// controller.PolicyRules and the EndpointSlices the view reads
// (deploy/rbac.yaml has both).
func viewClient(t *testing.T, k *harness.Kube) kubernetes.Interface {
	t.Helper()
	ctx := t.Context()
	const name = "controlplane"
	token := k.ServiceAccountToken(t, releaseNS, name, nil, 0)
	rules := append(controller.PolicyRules(), rbacv1.PolicyRule{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}})
	if _, err := k.Client.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: releaseNS, Name: name}},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	user, groups := harness.ServiceAccountUser(releaseNS, name)
	k.WaitAllowed(t, user, groups, &authorizationv1.ResourceAttributes{Verb: "watch", Resource: "secrets", Name: kubecontract.UpstreamCredentialsSecretName})
	k.WaitAllowed(t, user, groups, &authorizationv1.ResourceAttributes{Verb: "watch", Group: "discovery.k8s.io", Resource: "endpointslices"})
	return k.ClientFor(t, token)
}
