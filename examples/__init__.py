"""Research code built from `arch` modules alone (see the README, "Composing models")."""
