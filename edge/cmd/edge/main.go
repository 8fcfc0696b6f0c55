// Command edge is the pull-through OCI registry of one namespace.
package main

func main() {}
