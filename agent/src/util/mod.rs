//! Small shared infrastructure at the bottom of the map, with no knowledge of the domain.

pub mod caps;
pub mod private_file;
pub mod procinfo;
pub mod sock_diag;
pub mod sqlite;
pub mod state_dir;
pub mod time;
