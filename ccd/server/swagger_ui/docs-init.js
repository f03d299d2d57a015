// Starts Swagger UI on ccd's /docs page. Kept out of the page so that its
// Content-Security-Policy can forbid inline scripts. Every URL is relative to the page:
// the same page works through `ssh -L` to the daemon's port or to its Unix socket.
window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null, // the default sends the schema to validator.swagger.io
});
