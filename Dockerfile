# podium's image, for users with a container engine and internet: docker build -t podium:0.1.0 .
# A static musl binary in an otherwise empty image, non-root. `make image` builds the same
# contents without an engine (buildah, e2e/node/image.sh). The binary carries its own time zone
# database, so the image needs no tzdata.
FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
RUN cargo build --release --locked --bin podium

FROM scratch
COPY --from=build --chmod=0755 /src/target/release/podium /podium
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/podium"]
CMD ["run", "--leader-elect", "--http-addr=0.0.0.0:8080", "--log-format=json"]
