//! Request-sequence tests of the reconciler against a mock API server.
