//! Hemicycle federation tests: see README.md in this folder for its purpose; code arrives with its issue.
