//! The store conformance suite (placeholder replaced below).
