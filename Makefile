# Thin shortcuts; test/all.sh is the real test command (and what CI runs).
.PHONY: test e2e tools lint

# Everything: packages, tools, gofmt, vet, race tests, fuzz.
test:
	test/all.sh

# Only the end-to-end tests, assuming test/all.sh ran once (packages and
# bin/tools present).
e2e:
	PATH="$(CURDIR)/bin/tools:$$PATH" go test -race -count=1 -timeout 60m ./test/e2e/

# The Go tools pinned in tools/go.mod.
tools:
	cd tools && go build -o ../bin/tools/ tool

# golangci-lint (pinned in tools/lint/go.mod) over the module, and the
# layer order of test/archtest: the architecture checks alone, in a minute.
lint:
	cd tools/lint && go build -o ../../bin/tools/golangci-lint github.com/golangci/golangci-lint/v2/cmd/golangci-lint
	bin/tools/golangci-lint run --allow-serial-runners --build-tags bench ./...
	go test -count=1 ./test/archtest
