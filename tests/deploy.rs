//! Deployment manifests are valid (filled in by the deploy work).
