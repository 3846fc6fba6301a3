# syntax=docker/dockerfile:1
#
# The SSE Relay image: one static binary, non-root, no shell.
#
#   docker build -t sserelay .                                  # compile in a golang stage, distroless base
#   docker build --build-arg BASE=scratch -t sserelay .         # the same on an empty base
#   docker build --target prebuilt --build-arg BASE=scratch -t sserelay DIR
#                                                               # GoReleaser style: DIR holds a static ./sserelay
#
# Run: docker run --read-only -e SSERELAY_JWT_SECRET=... -p 8080:8080 -v sserelay-data:/data sserelay
# The only writable path is /data (the embedded JetStream store): mount a volume there.

# BASE is the final image's base: distroless static (CA certificates, tzdata, /etc/passwd with nonroot) by
# default; scratch works too (the binary needs nothing from it: no libc, no shell).
ARG BASE=gcr.io/distroless/static-debian12:nonroot
ARG GO_IMAGE=golang:1.26-bookworm

# runtime is everything but the binary; both final stages start from it.
FROM ${BASE} AS runtime
# 65532 is distroless's nonroot; on scratch it is just a number, which is all the relay needs.
USER 65532:65532
# WORKDIR after USER creates /data owned by 65532 (BuildKit and buildah), so that a fresh volume mounted there
# (its content is copied from the image) is writable by the relay.
WORKDIR /data
VOLUME /data
# serve's defaults for a container: listen on every interface (the default 127.0.0.1 is unreachable from
# outside the container), store in the volume. The embedded NATS client port stays on 127.0.0.1:4222: the
# pod's loopback, shared by the containers of a pod; set SSERELAY_NATS_LISTEN=0.0.0.0:4222 to publish from
# elsewhere.
ENV SSERELAY_LISTEN=0.0.0.0:8080 \
    SSERELAY_DATA_DIR=/data
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sserelay"]
CMD ["serve"]

# prebuilt copies the binary ./sserelay from the context (it must be static: CGO_ENABLED=0). It comes before
# the golang stage, so that --target prebuilt needs no golang image (CI can pull none).
FROM runtime AS prebuilt
COPY sserelay /usr/local/bin/sserelay

FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS
ARG TARGETARCH
ARG VERSION
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w${VERSION:+ -X github.com/sserelay/sserelay/cli.Version=$VERSION}" \
      -o /out/sserelay ./cli/sserelay

# The default target: the binary compiled above.
FROM runtime AS image
COPY --from=build /out/sserelay /usr/local/bin/sserelay
