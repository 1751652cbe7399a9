// What one request's log line carries beyond method, path and status: filled in as the request is
// served, by the composed (server.ts) and the hosted (hosted.ts) endpoints alike.
export interface RequestLog {
  route: string;
  user?: string;
  provider?: string;
  id?: string;
  source?: string;
  digest?: string;
  bytes: number;
  error?: string;
}
