import { defineConfig } from 'drizzle-kit';

export default defineConfig({
  dialect: 'sqlite',
  schema: './runtime/store/schema.ts',
  out: './runtime/store/migrations',
});
