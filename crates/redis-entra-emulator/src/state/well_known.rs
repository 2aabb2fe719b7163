//! The well-known identities (`--well-known`): fixed ids and secrets that test configurations
//! can name, as Azurite's well-known storage account. docs/EMULATOR.md lists them in a table.
//!
//! **These are public test values, not secrets**: anyone can read them here. They work only
//! against the emulator. The GUIDs all start with `7e57c0de` ("test code") and count up, so
//! they cannot be mistaken for (or collide with) real tenant or application ids, Microsoft's
//! well-known first-party ids included.

/// The tenant id (`tid`, `AZURE_TENANT_ID`).
pub const TENANT_ID: &str = "7e57c0de-0000-4000-8000-000000000000";

/// The service principal's client id (`AZURE_CLIENT_ID` of `--identity service-principal`).
pub const SERVICE_PRINCIPAL_CLIENT_ID: &str = "7e57c0de-0001-4000-8000-000000000001";
/// The service principal's object id (its Redis username).
pub const SERVICE_PRINCIPAL_OBJECT_ID: &str = "7e57c0de-0001-4000-8000-000000000002";
/// The service principal's client secret (`AZURE_CLIENT_SECRET`): public, for the emulator only.
pub const SERVICE_PRINCIPAL_SECRET: &str = "emu~well-known-test-secret.not-a-real-secret";

/// The system-assigned managed identity's client id.
pub const MANAGED_IDENTITY_CLIENT_ID: &str = "7e57c0de-0002-4000-8000-000000000001";
/// The system-assigned managed identity's object id.
pub const MANAGED_IDENTITY_OBJECT_ID: &str = "7e57c0de-0002-4000-8000-000000000002";

/// The user-assigned managed identity's client id (`AZURE_CLIENT_ID` of
/// `--identity user-assigned-identity`).
pub const USER_ASSIGNED_IDENTITY_CLIENT_ID: &str = "7e57c0de-0003-4000-8000-000000000001";
/// The user-assigned managed identity's object id.
pub const USER_ASSIGNED_IDENTITY_OBJECT_ID: &str = "7e57c0de-0003-4000-8000-000000000002";

/// The certificate application's client id (`--identity certificate`). Its certificate is not
/// well-known: it is new at every start, or kept with `--state`.
pub const CERTIFICATE_APP_CLIENT_ID: &str = "7e57c0de-0004-4000-8000-000000000001";
/// The certificate application's object id.
pub const CERTIFICATE_APP_OBJECT_ID: &str = "7e57c0de-0004-4000-8000-000000000002";

/// The workload identity's application client id (`--identity workload-identity`).
pub const WORKLOAD_APP_CLIENT_ID: &str = "7e57c0de-0005-4000-8000-000000000001";
/// The workload identity's application object id.
pub const WORKLOAD_APP_OBJECT_ID: &str = "7e57c0de-0005-4000-8000-000000000002";

/// The user's sign-in name (the same with or without `--well-known`).
pub const USER_NAME: &str = "developer@emulator.localhost";
/// The user's client id.
pub const USER_CLIENT_ID: &str = "7e57c0de-0006-4000-8000-000000000001";
/// The user's object id.
pub const USER_OBJECT_ID: &str = "7e57c0de-0006-4000-8000-000000000002";
/// The user's password: public, for the emulator only.
pub const USER_PASSWORD: &str = "Emu!well-known-test-password";

/// The cache's primary access key (base64 of `redis-entra-emulator-primary-key`): public.
pub const PRIMARY_KEY: &str = "cmVkaXMtZW50cmEtZW11bGF0b3ItcHJpbWFyeS1rZXk=";
/// The cache's secondary access key (base64 of `redis-entra-emulator-second--key`): public.
pub const SECONDARY_KEY: &str = "cmVkaXMtZW50cmEtZW11bGF0b3Itc2Vjb25kLS1rZXk=";
