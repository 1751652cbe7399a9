import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isAnyHost, joinHostPort, parseHostPort, splitHostPort } from './host-port.ts';

test('host and port are split, IPv6 brackets removed', () => {
  assert.deepEqual(splitHostPort('[::1]:5000'), { hostname: '::1', port: '5000' });
  assert.deepEqual(splitHostPort('::1'), { hostname: '::1' });
  assert.deepEqual(splitHostPort('reg:443'), { hostname: 'reg', port: '443' });
  assert.deepEqual(splitHostPort('reg'), { hostname: 'reg' });
});

test('an address needs a host and a port in range', () => {
  assert.deepEqual(parseHostPort('[::1]:0'), { host: '::1', port: 0 });
  assert.deepEqual(parseHostPort('localhost:80'), { host: 'localhost', port: 80 });
  assert.deepEqual(parseHostPort('127.0.0.1:65535'), { host: '127.0.0.1', port: 65535 });
  for (const bad of [
    '127.0.0.1',
    ':80',
    '127.0.0.1:65536',
    '::1:80',
    'host:port',
    '',
    'a:b:80',
    '[x]:80',
    'h:123456',
  ]) {
    assert.equal(parseHostPort(bad), undefined, bad);
  }
});

test('an empty host is taken only when the caller says what it means', () => {
  assert.deepEqual(parseHostPort(':5050', '0.0.0.0'), { host: '0.0.0.0', port: 5050 });
  assert.equal(parseHostPort(':5050'), undefined);
  assert.equal(parseHostPort('nope', '0.0.0.0'), undefined);
});

test('joinHostPort brackets IPv6 hosts and undoes splitHostPort', () => {
  assert.equal(joinHostPort('127.0.0.1', 5000), '127.0.0.1:5000');
  assert.equal(joinHostPort('::1', 5000), '[::1]:5000');
  for (const hostPort of ['registry.local:5000', '[fe80::1]:443']) {
    const { hostname, port } = splitHostPort(hostPort);
    assert.equal(joinHostPort(hostname, port!), hostPort);
  }
});

test('only the wildcard listen hosts mean every interface', () => {
  for (const host of ['', '0.0.0.0', '::']) assert.ok(isAnyHost(host), host);
  for (const host of ['127.0.0.1', '::1', 'localhost']) assert.ok(!isAnyHost(host), host);
});
