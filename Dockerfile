# syntax=docker/dockerfile:1
#
# The SSE Relay image: one static binary, non-root, no shell.
#
#   docker build -t sserelay .                                   # compile in a golang stage, distroless base
#   docker build --build-arg BASE=scratch -t sserelay .          # the same on an empty base
#   docker build --build-arg BINARY=prebuilt --build-arg BASE=scratch -t sserelay DIR
#                                                                # GoReleaser style: DIR holds a static ./sserelay
#
# Run: docker run -e SSERELAY_JWT_SECRET=... -p 8080:8080 -v sserelay-data:/data sserelay
# The only writable path is /data (the embedded JetStream store): mount a volume there. The root filesystem
# may be read-only.

# BASE is the final image's base: distroless static (CA certificates, tzdata, /etc/passwd with nonroot) by
# default; scratch works too (the binary needs nothing from it: no libc, no shell).
ARG BASE=gcr.io/distroless/static-debian12:nonroot
# BINARY picks where the binary comes from: "build" compiles it from this context, "prebuilt" copies the
# binary ./sserelay from the context (it must be static: CGO_ENABLED=0).
ARG BINARY=build
ARG GO_IMAGE=golang:1.26-bookworm

FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS TARGETARCH VERSION
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w${VERSION:+ -X github.com/sserelay/sserelay/cli.Version=$VERSION}" \
      -o /out/sserelay ./cli/sserelay

FROM scratch AS prebuilt
COPY sserelay /out/sserelay

# Only the stage named by BINARY is built (BuildKit and buildah skip the other one), so a prebuilt image needs
# no golang image.
FROM ${BINARY} AS binary

FROM ${BASE}
COPY --from=binary /out/sserelay /usr/local/bin/sserelay
# 65532 is distroless's nonroot; on scratch it is just a number, which is all the relay needs.
USER 65532:65532
# WORKDIR after USER creates /data owned by 65532, so that a fresh volume mounted there (its content is copied
# from the image) is writable by the relay.
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
