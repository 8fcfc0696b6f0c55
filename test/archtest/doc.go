// Package archtest checks the repository's package layering: inside each
// component, a package imports only from the layers below its own. The
// import rules between components (the edge never imports the control
// plane, shared code imports no component, ...) are depguard rules in
// .golangci.yml; this package holds the order within each component, which
// depguard cannot express without one rule per package.
package archtest
