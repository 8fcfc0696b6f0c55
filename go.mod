module github.com/k8s-selfhost-repo/k8s-selfhost-repo

go 1.26.8
