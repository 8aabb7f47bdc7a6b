"""`mover ui`: a web dashboard over mover's Kubernetes objects.

Two ways to run it, one code path:

- **local** (`mover ui`): the user's kubeconfig, as `kubectl proxy` does, served on 127.0.0.1
  only; every read and write is the kubeconfig user's, judged by the API server;
- **in the cluster** (the chart's `ui` component, behind a Service): every request carries the
  user's bearer token; the dashboard authenticates it with a TokenReview, reads mover's own
  objects with its ServiceAccount (read-only) and shows only the applications the user may see
  (SubjectAccessReview), and makes every write, and every read of a repository's Secrets, with
  the user's own token: there is no shared identity that acts for them.

Modules: `access` (who asks and what they may do), `views` (what the pages show, from the API
and the repositories), `wizard` (a restore's form, spec and preview), `pages` (each page's data
for one user), `web` (the Starlette application: routes, templates, CSRF, headers), `command`
(the `mover ui` verb). Templates and the one stylesheet and script are in `templates/` and
`static/`: server-rendered pages, no build step.
"""
