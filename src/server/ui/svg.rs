//! Pictures drawn on the server as inline SVG: no chart library, nothing to download.
