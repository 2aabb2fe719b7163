//! The whole local Azure, started together (being written).

/// Which identity the env file describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdentityKind {
    /// A service principal with a client secret.
    #[default]
    ServicePrincipal,
    /// A system-assigned managed identity (App Service protocol).
    ManagedIdentity,
}

/// How to start the emulator.
#[derive(Debug, Clone, Default)]
pub struct EmulatorConfig {}

/// A running emulator.
#[derive(Debug)]
pub struct Emulator {}
