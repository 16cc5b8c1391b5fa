//! Multi-node scenarios against real `hemicycle serve` processes (and a real Synapse), one module
//! per area, in one test binary.

mod accounts;
mod admin;
mod antivirus;
mod bad_input;
mod calls;
mod consent;
mod console;
mod convergence;
mod e2ee_and_media;
mod federation;
mod hostile;
mod network;
mod network_view;
mod synapse;
mod telemetry;
mod workspace;
