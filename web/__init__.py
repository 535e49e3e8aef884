"""The browser client of `ideal serve` (static files, no build step): index.html, app.js, style.css."""
