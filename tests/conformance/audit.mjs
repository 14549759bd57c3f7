// The GraphQL-over-HTTP audit of graphql-http against a live server: prints every result as JSON.
import { auditServer } from 'graphql-http';

const url = process.argv[2];
const results = await auditServer({ url });
const out = [];
for (const result of results) {
  out.push({ id: result.id, name: result.name, status: result.status,
             reason: result.status === 'ok' ? null : result.reason,
             response: result.status === 'ok' ? null : (result.response ? { status: result.response.status,
               contentType: result.response.headers.get('content-type'),
               body: await result.response.clone().text().catch(() => null) } : null) });
}
console.log(JSON.stringify(out));
