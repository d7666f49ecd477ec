//! The `rudder` command line (filled in by the CLI work).
