# Multi-stage build of the podium operator: a static musl binary on a distroless,
# non-root base. Build with your own engine: docker build -t podium:0.1.0 .
FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin podium

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/release/podium /podium
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/podium"]
CMD ["run", "--leader-elect", "--http-addr=0.0.0.0:8080", "--log-format=json"]
