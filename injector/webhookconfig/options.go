package webhookconfig

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/certs"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/webhook"
)

// Defaults of the Options.
const (
	DefaultSecretName        = "k8s-selfhost-repo-webhook-tls"
	DefaultConfigurationName = "k8s-selfhost-repo-injector"
	DefaultWebhookName       = "pods.injector.k8s-selfhost-repo.io"
	DefaultTimeoutSeconds    = 5
	DefaultServicePort       = 443
	DefaultInterval          = time.Minute
	DefaultCAOverlap         = 10 * time.Minute
	DefaultCAPropagation     = 10 * time.Second
)

// ErrInvalidOptions is wrapped by every error New returns about Options;
// the message names the field.
var ErrInvalidOptions = errors.New("invalid webhook configuration options")

// Service is the in-cluster address of the webhook server, written to
// clientConfig.service.
type Service struct {
	// Name of the Service in Options.Namespace.
	Name string
	// Port of the Service (default 443).
	Port int32
	// Path of the handler (default webhook.Path).
	Path string
}

// Options configure a Keeper. Namespace and exactly one of Service and URL
// are required; zero values elsewhere mean the defaults.
type Options struct {
	// Namespace is the release namespace: the Secret lives here, and the
	// webhook never sees its pods.
	Namespace string
	// SecretName names the kubernetes.io/tls Secret holding the CA and the
	// serving certificate (default DefaultSecretName).
	SecretName string
	// ConfigurationName names the MutatingWebhookConfiguration (default
	// DefaultConfigurationName).
	ConfigurationName string
	// WebhookName is the webhook's name inside it, a fully qualified name
	// (default DefaultWebhookName).
	WebhookName string
	// Service points the API server at an in-cluster Service.
	Service *Service
	// URL points the API server at https://host:port/path instead (tests,
	// a control plane outside the cluster).
	URL string
	// Hosts are the serving certificate's DNS names and IPs. Default: for
	// Service, <name>, <name>.<namespace> and <name>.<namespace>.svc (the
	// name the API server checks); for URL, its host.
	Hosts []string
	// ExtraHosts are added to Hosts: the names of the control plane's gRPC
	// Service, so that one serving certificate of the one CA serves both
	// the webhook and the edges' configuration stream.
	ExtraHosts []string
	// ConfigurationDisabled keeps only the Secret (CA and serving
	// certificate, for gRPC TLS) and never writes a webhook configuration:
	// the injector is disabled. Service and URL are then optional, and
	// Hosts or ExtraHosts must name the certificate's hosts.
	ConfigurationDisabled bool
	// OnCABundle, when set, is called with the CA bundle (PEM: the CA, and
	// the previous one during a rotation's overlap) after every Sync that
	// changed it, the first included. It runs under the Keeper's lock and
	// must not block.
	OnCABundle func(bundle []byte)
	// TimeoutSeconds is the webhook's timeout, 1 to 30 (default 5).
	TimeoutSeconds int32
	// Interval is how often Run re-reads the Secret (picking up another
	// replica's rotation), rotates what is due and repairs the webhook
	// configuration (default one minute).
	Interval time.Duration
	// CAOverlap is how long a replaced CA stays in caBundle next to the
	// new one, so servers still presenting a certificate of the old CA
	// keep working until they have reloaded (default ten minutes; at
	// least Interval + CAPropagation).
	CAOverlap time.Duration
	// CAPropagation is how long after a CA rotation a replica keeps
	// presenting its certificate of the previous CA, so that every API
	// server has loaded the new caBundle before it sees the new CA
	// (default ten seconds).
	CAPropagation time.Duration
	// Certs tunes certificate lifetimes.
	Certs certs.Options
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
}

// withDefaults fills defaults and validates; errors name the field.
func (o Options) withDefaults() (Options, error) {
	if o.SecretName == "" {
		o.SecretName = DefaultSecretName
	}
	if o.ConfigurationName == "" {
		o.ConfigurationName = DefaultConfigurationName
	}
	if o.WebhookName == "" {
		o.WebhookName = DefaultWebhookName
	}
	if o.TimeoutSeconds == 0 {
		o.TimeoutSeconds = DefaultTimeoutSeconds
	}
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.CAPropagation == 0 {
		o.CAPropagation = DefaultCAPropagation
	}
	if o.CAOverlap == 0 {
		o.CAOverlap = max(DefaultCAOverlap, 2*o.Interval+o.CAPropagation)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Service != nil {
		svc := *o.Service
		if svc.Port == 0 {
			svc.Port = DefaultServicePort
		}
		if svc.Path == "" {
			svc.Path = webhook.Path
		}
		o.Service = &svc
	}
	if err := o.validate(); err != nil {
		return o, err
	}
	if len(o.Hosts) == 0 {
		o.Hosts = o.defaultHosts()
	}
	o.Hosts = append(slices.Clone(o.Hosts), o.ExtraHosts...)
	if len(o.Hosts) == 0 {
		return o, fmt.Errorf("%w: Hosts: without Service or URL, Hosts or ExtraHosts must name the certificate's hosts", ErrInvalidOptions)
	}
	return o, nil
}

func (o Options) validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidOptions, field, fmt.Sprintf(format, args...))
	}
	if errs := validation.IsDNS1123Label(o.Namespace); len(errs) > 0 {
		return bad("Namespace", "%q: %s", o.Namespace, strings.Join(errs, "; "))
	}
	for _, f := range []struct{ field, value string }{
		{"SecretName", o.SecretName}, {"ConfigurationName", o.ConfigurationName},
	} {
		if errs := validation.IsDNS1123Subdomain(f.value); len(errs) > 0 {
			return bad(f.field, "%q: %s", f.value, strings.Join(errs, "; "))
		}
	}
	if errs := validation.IsDNS1123Subdomain(o.WebhookName); len(errs) > 0 || strings.Count(o.WebhookName, ".") < 2 {
		return bad("WebhookName", "%q: want a fully qualified name with at least three segments", o.WebhookName)
	}
	switch {
	case o.Service == nil && o.URL == "" && o.ConfigurationDisabled:
	case o.Service == nil && o.URL == "":
		return bad("Service", "one of Service and URL is required")
	case o.Service != nil && o.URL != "":
		return bad("URL", "set either Service or URL, not both")
	case o.Service != nil:
		if errs := validation.IsDNS1035Label(o.Service.Name); len(errs) > 0 {
			return bad("Service.Name", "%q: %s", o.Service.Name, strings.Join(errs, "; "))
		}
		if o.Service.Port < 1 || o.Service.Port > 65535 {
			return bad("Service.Port", "%d: want 1-65535", o.Service.Port)
		}
		if !strings.HasPrefix(o.Service.Path, "/") {
			return bad("Service.Path", "%q: want an absolute path", o.Service.Path)
		}
	default:
		u, err := url.Parse(o.URL)
		switch {
		case err != nil:
			return bad("URL", "%v", err)
		case u.Scheme != "https" || u.Host == "":
			return bad("URL", "%q: want https://host[:port]/path", o.URL)
		case u.User != nil || u.RawQuery != "" || u.Fragment != "":
			return bad("URL", "%q: no user, query or fragment allowed", o.URL)
		}
	}
	if o.TimeoutSeconds < 1 || o.TimeoutSeconds > 30 {
		return bad("TimeoutSeconds", "%d: want 1-30", o.TimeoutSeconds)
	}
	if o.Interval <= 0 {
		return bad("Interval", "%s: want > 0", o.Interval)
	}
	if o.CAPropagation < 0 {
		return bad("CAPropagation", "%s: want >= 0", o.CAPropagation)
	}
	if o.CAOverlap < o.Interval+o.CAPropagation {
		return bad("CAOverlap", "%s: want at least Interval + CAPropagation (%s), so every replica has switched before the old CA leaves caBundle", o.CAOverlap, o.Interval+o.CAPropagation)
	}
	if o.Certs.CARenewBefore > 0 && o.Certs.CAValidity > 0 && o.Certs.CARenewBefore >= o.Certs.CAValidity {
		return bad("Certs.CARenewBefore", "%s: want less than Certs.CAValidity (%s)", o.Certs.CARenewBefore, o.Certs.CAValidity)
	}
	for i, h := range slices.Concat(o.Hosts, o.ExtraHosts) {
		if net.ParseIP(h) == nil && len(validation.IsDNS1123Subdomain(strings.TrimPrefix(h, "*."))) > 0 {
			return bad(fmt.Sprintf("Hosts[%d]", i), "%q: want a DNS name or an IP address", h)
		}
	}
	return nil
}

func (o Options) defaultHosts() []string {
	if o.Service != nil {
		n, ns := o.Service.Name, o.Namespace
		return []string{n, n + "." + ns, n + "." + ns + ".svc"}
	}
	if o.URL == "" {
		return nil // ConfigurationDisabled: ExtraHosts name them
	}
	u, _ := url.Parse(o.URL) // validated
	return []string{u.Hostname()}
}
