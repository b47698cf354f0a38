// Starts Swagger UI on /docs (app/templates/docs.html), in a file of its own: the
// page's Content-Security-Policy allows no inline script.
const root = document.getElementById("swagger-ui");
globalThis.SwaggerUIBundle({
  url: root.dataset.url,
  domNode: root,
  presets: [globalThis.SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  deepLinking: true,
  // The default sends the document to an online validator for a badge: no third parties.
  validatorUrl: null,
});
